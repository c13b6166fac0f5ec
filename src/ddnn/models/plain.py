"""Keyed building blocks for plain (non-residual) families: VGG and MobileNet.

A plain block is a keyed sequence (conv, BN, ReLU ...) that keeps its stage's width, so skipping it
in a sub-net still leaves a valid network, exactly as a skipped residual block does.
"""

from collections.abc import Sequence

from torch import nn

from ddnn.models.norm import KeyedSequential, keyed_norm


def conv_bn_relu(cin: int, cout: int, keys: Sequence[str], bn: str, k: int = 3, stride: int = 1,
                 groups: int = 1) -> list[nn.Module]:
    """conv (no bias) -> keyed BatchNorm -> ReLU, as a list to splice into a KeyedSequential."""
    return [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        keyed_norm(bn, lambda: nn.BatchNorm2d(cout), keys),
        nn.ReLU(inplace=True),
    ]


def stage_keys(subnets, stage: int, index: int) -> list[str]:
    """The sub-nets that run block `index` of `stage` (they need its normalisation)."""
    return [sn.name for sn in subnets if sn.blocks[stage] > index]


def empty_stem() -> KeyedSequential:
    """A stem that computes nothing: the net's feature points are then its stage outputs only."""
    return KeyedSequential()
