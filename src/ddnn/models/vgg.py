"""VGG as a DynamicNet (docs/methods.md, offline KD): VGG-11 (teacher) and VGG-6 (student) for 32x32 inputs.

Four blocks of 3x3 conv-BN-ReLU layers (widths 64/128/256/512), a 2x2 max-pool after each block, then
fully connected layers: VGG-11 = convs [2,2,2,2] + FC 1024-1024-classes, VGG-6 = convs [1,1,1,1] +
FC 1024-classes. A stage is a block; the pool that follows block s opens stage s+1, and the last one
is the head's adaptive 2x2 max-pool (exactly the 2x2/2 pool for 32x32 inputs, 512*2*2 features).
The stem is empty, so the feature points P_0..P_3 are the four block outputs (32, 16, 8, 4 px).
Two families because the heads differ: `vgg` (two hidden FC layers) and `vgg_fc1` (one).
"""

from collections.abc import Sequence

from torch import nn

from ddnn.models.dynamic import DynamicNet, SubNet, feature_info
from ddnn.models.norm import KeyedSequential
from ddnn.models.common import check_widths, he_init
from ddnn.models.plain import conv_bn_relu, empty_stem, stage_keys
from ddnn.models.resnet import Family


def _build_vgg(family: str, hidden: Sequence[int]):
    def build(subnets: Sequence[SubNet], num_classes: int, in_channels: int, widths: Sequence[int],
              bn: str = "private", **_residual_options: object) -> DynamicNet:
        """(stem, shortcut and zero_init_residual do not apply to a net without stem or residual blocks)"""
        full = subnets[0].blocks
        check_widths(widths, full)
        stages, cin = [], in_channels
        for s, (n, width) in enumerate(zip(full, widths)):
            blocks = []
            for i in range(n):
                pool = [nn.MaxPool2d(2)] if i == 0 and s > 0 else []
                blocks.append(KeyedSequential(*pool, *conv_bn_relu(cin, width, stage_keys(subnets, s, i), bn)))
                cin = width
            stages.append(blocks)
        layers: list[nn.Module] = [nn.AdaptiveMaxPool2d(2), nn.Flatten()]
        features = cin * 4
        for h in hidden:
            layers += [nn.Linear(features, h), nn.ReLU(inplace=True)]
            features = h
        layers.append(nn.Linear(features, num_classes))
        points = feature_info(None, [(w, 2 ** s) for s, w in enumerate(widths)])  # a 2x2 pool opens each later stage
        return he_init(DynamicNet(empty_stem(), stages, nn.Sequential(*layers), subnets, family, points))

    build.__doc__ = f"VGG with FC {'-'.join(map(str, hidden))}-classes."
    return build


FAMILIES: dict[str, Family] = {
    "vgg": Family("vgg", _build_vgg("vgg", (1024, 1024)), (64, 128, 256, 512), {"vgg11": (2, 2, 2, 2)},
                  "VGG, 3x3 conv-BN-ReLU blocks + 2x2 max-pool, FC 1024-1024-classes"),
    "vgg_fc1": Family("vgg_fc1", _build_vgg("vgg_fc1", (1024,)), (64, 128, 256, 512), {"vgg6": (1, 1, 1, 1)},
                      "VGG, 3x3 conv-BN-ReLU blocks + 2x2 max-pool, FC 1024-classes"),
}
