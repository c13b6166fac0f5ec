"""VGG-11/6 and MobileNet-16/9 as DynamicNets: sizes against hand-computed counts, their feature
points, and extraction equal to the dynamic forward."""

import pytest
import torch

from ddnn.models.cost import count_params
from ddnn.models import build_model


def conv(cin, cout, k=3, groups=1):
    return cin // groups * cout * k * k


def test_vgg11_and_vgg6_parameter_counts_by_hand():
    # conv (no bias) + BN (weight, bias) per layer; head: max-pool to 2x2 -> 512*4 features
    convs11 = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
    vgg11 = sum(conv(a, b) + 2 * b for a, b in convs11) + (2048 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 100 + 100)
    convs6 = [(3, 64), (64, 128), (128, 256), (256, 512)]
    vgg6 = sum(conv(a, b) + 2 * b for a, b in convs6) + (2048 * 1024 + 1024) + (1024 * 100 + 100)
    assert (vgg11, vgg6) == (7_937_572, 3_752_612)
    assert count_params(build_model("vgg11", 100, 3, subnets=[]).extract()) == vgg11
    assert count_params(build_model("vgg6", 100, 3, subnets=[]).extract()) == vgg6
    # the paper's compression rate for VGG-11 -> VGG-6 is 2.08x
    assert vgg11 / vgg6 == pytest.approx(2.115, abs=1e-3)


def test_mobilenet16_and_mobilenet9_parameter_counts_by_hand():
    def separable(cin, cout):  # depthwise 3x3 + BN, pointwise 1x1 + BN
        return conv(cin, cin, 3, cin) + 2 * cin + conv(cin, cout, 1) + 2 * cout

    def mobilenet(blocks):
        total, cin = conv(3, 32) + 2 * 32, 32
        for n, width in zip(blocks, (64, 128, 256, 512)):
            for _ in range(n):
                total, cin = total + separable(cin, width), width
        return total + 512 * 1000 + 1000

    assert (mobilenet((2, 3, 6, 3)), mobilenet((1, 2, 2, 2))) == (1_618_152, 1_050_920)
    assert count_params(build_model("mobilenet16", 1000, 3, subnets=[]).extract()) == 1_618_152
    assert count_params(build_model("mobilenet9", 1000, 3, subnets=[]).extract()) == 1_050_920


@pytest.mark.parametrize("name,size,points", [
    ("vgg11", 32, [(64, 32), (128, 16), (256, 8), (512, 4)]),  # empty stem: the four block outputs
    ("vgg6", 32, [(64, 32), (128, 16), (256, 8), (512, 4)]),
    ("resnet32", 32, [(16, 32), (16, 32), (32, 16), (64, 8)]),  # stem + three stages
    ("mobilenet16", 64, [(32, 32), (64, 32), (128, 16), (256, 8), (512, 4)]),  # stem + four stages
])
def test_feature_points(name, size, points):
    net = build_model(name, 10, 3, subnets=[]).eval()
    out = net(torch.randn(2, 3, size, size), features=True)
    got = [(p.shape[1], p.shape[2]) for p in net.feature_points(out)]
    assert got == points
    assert out.logits.shape == (2, 10)
    # the net describes the same points without running (what kd and online read)
    assert [(f.channels, size // f.reduction) for f in net.feature_info] == points


@pytest.mark.parametrize("name,size,options", [
    ("resnet14", 32, {}), ("resnet14", 32, {"widths": [4, 8, 12], "cheap": "shift"}),
    ("resnet18", 64, {"stem": "imagenet", "widths": [8, 8, 16, 16]}), ("resnet18", 32, {"stem": "cifar", "widths": [8, 8, 16, 16]}),
    ("resnet26", 64, {"stem": "imagenet", "widths": [8, 8, 16, 16]}), ("vgg11", 32, {"cheap": "depthwise", "widths": [8, 8, 16, 16]}),
    ("mobilenet16", 64, {"widths": [8, 8, 16, 16]}), ("resnet14", 32, {"cheap": "group", "head": "private"}),
])
def test_feature_info_matches_every_sub_nets_intermediates(name, size, options):
    """Channels and reduction of each point, as declared by the family, against a forward pass of the
    full net and of its smallest sub-net (every sub-net has the same points)."""
    torch.manual_seed(0)
    net = build_model(name, 5, 3, subnets=[[1] * (3 if name == "resnet14" else 4)], **options).eval()
    assert [f.name for f in net.feature_info][-2:] == [f"stage{len(net.max_blocks) - 2}", f"stage{len(net.max_blocks) - 1}"]
    for sub in net.subnets:
        logits, points = net.forward_intermediates(torch.randn(2, 3, size, size), sub)
        assert logits.shape == (2, 5)
        assert [(p.shape[1], p.shape[2], p.shape[3]) for p in points] == [
            (f.channels, size // f.reduction, size // f.reduction) for f in net.feature_info]


@pytest.mark.parametrize("name,sub,size", [("vgg11", [1, 1, 1, 1], 32), ("mobilenet16", "mobilenet9", 64),
                                           ("vgg6", None, 32)])
def test_extraction_equals_dynamic_forward(name, sub, size):
    torch.manual_seed(0)
    net = build_model(name, 7, 3, subnets=[sub] if sub else [], widths=[4, 8, 8, 16])
    x = torch.randn(3, 3, size, size)
    net.train()
    for _ in range(2):  # move the BN statistics away from their init
        for s in net.subnets:
            net(x, s)
    net.eval()
    for s in net.subnets:
        plain = net.extract(s)
        assert not any(type(m).__module__.startswith("ddnn.models.norm") for m in plain.modules())
        torch.testing.assert_close(plain(x), net(x, s))
