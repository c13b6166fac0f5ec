"""What every model family shares: the widths check and He initialisation."""

from collections.abc import Sequence

from torch import nn

from ddnn.errors import DdnnError


def check_widths(widths: Sequence[int], blocks: Sequence[int]) -> None:
    """One width per stage, or a one-line error."""
    if len(widths) != len(blocks):
        raise DdnnError(f"model.widths has {len(widths)} entries but the net has {len(blocks)} stages; "
                        "give one width per stage")


def he_init(net: nn.Module) -> nn.Module:
    """He (fan-out) init for convs, unit BN (the torchvision recipe); linear layers keep torch's default."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net
