"""MobileNet (v1-style, depthwise-separable blocks) as a DynamicNet for 64x64 inputs (docs/methods.md, offline KD).

Layer table (ours; the paper gives only a figure): stem 3x3/2 conv-BN-ReLU to 32 channels (64 -> 32
px), then four stages of depthwise-separable blocks (3x3 depthwise conv-BN-ReLU, 1x1 pointwise
conv-BN-ReLU) of widths 64/128/256/512 with stride 1/2/2/2 in each stage's first block (32, 16, 8,
4 px), global average pool, FC. MobileNet-16 = blocks [2,3,6,3] (stem + 14 blocks + FC), MobileNet-9
= [1,2,2,2] (stem + 7 blocks + FC), nested in one family. The five feature points are the stem and
the four stage outputs.
"""

from collections.abc import Sequence

from torch import nn

from ddnn.models.dynamic import DynamicNet, SubNet, feature_info
from ddnn.models.norm import KeyedSequential
from ddnn.models.common import check_widths, he_init
from ddnn.models.plain import conv_bn_relu, stage_keys
from ddnn.models.resnet import Family

STEM_WIDTH = 32


def separable(cin: int, cout: int, stride: int, keys: Sequence[str], bn: str) -> KeyedSequential:
    """3x3 depthwise conv-BN-ReLU, then 1x1 pointwise conv-BN-ReLU."""
    return KeyedSequential(*conv_bn_relu(cin, cin, keys, bn, 3, stride, groups=cin),
                           *conv_bn_relu(cin, cout, keys, bn, 1))


def build_mobilenet(subnets: Sequence[SubNet], num_classes: int, in_channels: int, widths: Sequence[int],
                    bn: str = "private", **_residual_options: object) -> DynamicNet:
    """MobileNet: 3x3/2 stem, stages of depthwise-separable blocks, global pool, FC (stem, shortcut and
    zero_init_residual do not apply)."""
    full = subnets[0].blocks
    check_widths(widths, full)
    stem_mod = KeyedSequential(*conv_bn_relu(in_channels, STEM_WIDTH, [s.name for s in subnets], bn, 3, 2))
    stages, cin, points = [], STEM_WIDTH, []
    for s, (n, width) in enumerate(zip(full, widths)):
        blocks = []
        for i in range(n):
            stride = (1 if s == 0 else 2) if i == 0 else 1
            blocks.append(separable(cin, width, stride, stage_keys(subnets, s, i), bn))
            cin = width
        stages.append(blocks)
        points.append((width, 2 ** (s + 1)))  # the stem halves the input, every later stage again
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))
    points = feature_info((STEM_WIDTH, 2), points)
    return he_init(DynamicNet(stem_mod, stages, head, subnets, "mobilenet", points))


FAMILIES: dict[str, Family] = {
    "mobilenet": Family("mobilenet", build_mobilenet, (64, 128, 256, 512),
                        {"mobilenet9": (1, 2, 2, 2), "mobilenet16": (2, 3, 6, 3)},
                        "MobileNet (depthwise-separable blocks) for 64x64 inputs, 3x3/2 stem"),
}
