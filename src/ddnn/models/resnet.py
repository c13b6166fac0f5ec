"""ResNet families as DynamicNets: CIFAR ResNet-6n+2 and ImageNet-style basic/bottleneck ResNets.

With every block active each is exactly the standard architecture (CIFAR ResNet-56: 0.86 M
parameters with projection shortcuts; torchvision ResNet-18/34/50 layouts, parameter for parameter).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from ddnn.models.common import check_widths, he_init
from ddnn.models.dynamic import DynamicNet, ResidualBlock, SubNet, feature_info
from ddnn.models.norm import KeyedSequential, keyed_norm
from ddnn.models.static import PadShortcut


@dataclass(frozen=True)
class Family:
    """A model family: its builder, default widths and the named depth vectors it nests."""

    name: str
    build: Callable[..., DynamicNet]
    widths: tuple[int, ...]
    depths: dict[str, tuple[int, ...]]
    about: str


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class _Norms:
    """Makes private/shared BatchNorm layers for the sub-nets that run a given position."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __call__(self, channels: int, keys: Sequence[str]) -> nn.Module:
        return keyed_norm(self.kind, lambda: nn.BatchNorm2d(channels), keys)


def _basic_block(cin: int, cout: int, stride: int, keys: Sequence[str], norm: _Norms, shortcut: str) -> ResidualBlock:
    body = KeyedSequential(
        _conv(cin, cout, 3, stride), norm(cout, keys), nn.ReLU(inplace=True),
        _conv(cout, cout, 3), norm(cout, keys),
    )
    skip = None
    if stride != 1 or cin != cout:
        if shortcut == "pad":
            skip = PadShortcut(stride, cout - cin)
        else:
            skip = KeyedSequential(_conv(cin, cout, 1, stride), norm(cout, keys))
    return ResidualBlock(body, skip)


def _bottleneck_block(cin: int, width: int, stride: int, keys: Sequence[str], norm: _Norms, shortcut: str) -> ResidualBlock:
    cout = width * 4
    body = KeyedSequential(
        _conv(cin, width, 1), norm(width, keys), nn.ReLU(inplace=True),
        _conv(width, width, 3, stride), norm(width, keys), nn.ReLU(inplace=True),
        _conv(width, cout, 1), norm(cout, keys),
    )
    skip = None
    if stride != 1 or cin != cout:
        skip = KeyedSequential(_conv(cin, cout, 1, stride), norm(cout, keys))
    return ResidualBlock(body, skip)


def _assemble(
    family: str,
    stem: KeyedSequential,
    stem_width: int,
    stem_reduction: int,
    make_block: Callable[..., ResidualBlock],
    expansion: int,
    widths: Sequence[int],
    strides: Sequence[int],
    subnets: Sequence[SubNet],
    num_classes: int,
    norm: _Norms,
    shortcut: str,
    zero_init_residual: bool,
) -> DynamicNet:
    full = subnets[0].blocks
    check_widths(widths, full)
    stages, cin, points, reduction = [], stem_width, [], stem_reduction
    for s, (n, width, stride) in enumerate(zip(full, widths, strides)):
        blocks = []
        for i in range(n):
            keys = [sn.name for sn in subnets if sn.blocks[s] > i]
            blocks.append(make_block(cin, width, stride if i == 0 else 1, keys, norm, shortcut))
            cin = width * expansion
        stages.append(blocks)
        reduction *= stride
        points.append((cin, reduction))
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))
    net = DynamicNet(stem, stages, head, subnets, family, feature_info((stem_width, stem_reduction), points))
    _init(net, zero_init_residual)
    return net


def _init(net: nn.Module, zero_init_residual: bool) -> None:
    """He init (the torchvision ResNet recipe), optionally zeroing each residual branch's last BN."""
    he_init(net)
    if zero_init_residual:
        for m in net.modules():
            if isinstance(m, ResidualBlock):
                last = [layer for layer in m.body if not isinstance(layer, (nn.Conv2d, nn.ReLU))][-1]
                for bn in last.modules():
                    if isinstance(bn, nn.BatchNorm2d):
                        nn.init.zeros_(bn.weight)


def build_cifar_resnet(
    subnets: Sequence[SubNet], num_classes: int, in_channels: int, widths: Sequence[int],
    bn: str = "private", shortcut: str = "conv", stem: str = "cifar", zero_init_residual: bool = False,
) -> DynamicNet:
    """CIFAR ResNet-6n+2: 3x3 stem, stages of basic blocks, stride 2 from the second stage on."""
    norm = _Norms(bn)
    keys = [s.name for s in subnets]
    stem_mod = KeyedSequential(_conv(in_channels, widths[0], 3), norm(widths[0], keys), nn.ReLU(inplace=True))
    strides = [1] + [2] * (len(widths) - 1)
    return _assemble("cifar_resnet", stem_mod, widths[0], 1, _basic_block, 1, widths, strides, subnets,
                     num_classes, norm, shortcut, zero_init_residual)


def _imagenet_stem(in_channels: int, width: int, stem: str, norm: _Norms, keys: Sequence[str]) -> KeyedSequential:
    """`imagenet`: 7x7/2 conv + 3x3/2 max-pool; `cifar`: one 3x3/1 conv for small (32x32) inputs."""
    if stem == "imagenet":
        return KeyedSequential(
            nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False), norm(width, keys),
            nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1),
        )
    return KeyedSequential(_conv(in_channels, width, 3), norm(width, keys), nn.ReLU(inplace=True))


def _build_imagenet(family: str, block: Callable[..., ResidualBlock], expansion: int):
    def build(
        subnets: Sequence[SubNet], num_classes: int, in_channels: int, widths: Sequence[int],
        bn: str = "private", shortcut: str = "conv", stem: str = "imagenet", zero_init_residual: bool = False,
    ) -> DynamicNet:
        norm = _Norms(bn)
        stem_mod = _imagenet_stem(in_channels, widths[0], stem, norm, [s.name for s in subnets])
        strides = [1] + [2] * (len(widths) - 1)
        return _assemble(family, stem_mod, widths[0], 4 if stem == "imagenet" else 1, block, expansion, widths, strides, subnets,
                         num_classes, norm, "conv", zero_init_residual)

    build.__doc__ = f"ImageNet-style ResNet with {'bottleneck' if expansion == 4 else 'basic'} blocks."
    return build


FAMILIES: dict[str, Family] = {
    "cifar_resnet": Family(
        "cifar_resnet", build_cifar_resnet, (16, 32, 64),
        {f"resnet{6 * n + 2}": (n, n, n) for n in (1, 2, 3, 5, 7, 9, 18)},
        "CIFAR ResNet-6n+2, basic blocks, widths 16/32/64",
    ),
    "resnet_basic": Family(
        "resnet_basic", _build_imagenet("resnet_basic", _basic_block, 1), (64, 128, 256, 512),
        {"resnet10": (1, 1, 1, 1), "resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)},
        "ImageNet-style ResNet, basic blocks",
    ),
    "resnet_bottleneck": Family(
        "resnet_bottleneck", _build_imagenet("resnet_bottleneck", _bottleneck_block, 4), (64, 128, 256, 512),
        {"resnet26": (2, 2, 2, 2), "resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3), "resnet152": (3, 8, 36, 3)},
        "ImageNet-style ResNet, bottleneck blocks (x4 expansion)",
    ),
}
