"""Cheap convolutions: shift's exact values, parameter and MAC counts against their formulas, and
`cheapen` on every registered model family (outputs, extraction, sub-nets, costs)."""

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from ddnn.config import load_config
from ddnn.models.cost import count_macs, count_params
from ddnn.engine.setup import check_config
from ddnn.errors import DdnnError
from ddnn.models import ModelBuilder, build_model, family_of
from ddnn.models.cheap import OFFSETS, Shift, cheap_conv, cheapen, is_dense_3x3, shift_groups
from ddnn.registry import MODELS


pytestmark = pytest.mark.usefixtures("one_thread")


IMAGE = torch.tensor([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]])

# out[y, x] = IMAGE[y + dy, x + dx], zero outside: one hand-written map per offset (dy, dx), row-major
EXPECTED_STRIDE_1 = {
    (-1, -1): [[0, 0, 0], [0, 1, 2], [0, 4, 5]],
    (-1, 0): [[0, 0, 0], [1, 2, 3], [4, 5, 6]],
    (-1, 1): [[0, 0, 0], [2, 3, 0], [5, 6, 0]],
    (0, -1): [[0, 1, 2], [0, 4, 5], [0, 7, 8]],
    (0, 0): [[1, 2, 3], [4, 5, 6], [7, 8, 9]],
    (0, 1): [[2, 3, 0], [5, 6, 0], [8, 9, 0]],
    (1, -1): [[0, 4, 5], [0, 7, 8], [0, 0, 0]],
    (1, 0): [[4, 5, 6], [7, 8, 9], [0, 0, 0]],
    (1, 1): [[5, 6, 0], [8, 9, 0], [0, 0, 0]],
}
# stride 2: out[y, x] = IMAGE[2y + dy, 2x + dx] for y, x in {0, 1}
EXPECTED_STRIDE_2 = {
    (-1, -1): [[0, 0], [0, 5]],
    (-1, 0): [[0, 0], [4, 6]],
    (-1, 1): [[0, 0], [5, 0]],
    (0, -1): [[0, 2], [0, 8]],
    (0, 0): [[1, 3], [7, 9]],
    (0, 1): [[2, 0], [8, 0]],
    (1, -1): [[0, 5], [0, 0]],
    (1, 0): [[4, 6], [0, 0]],
    (1, 1): [[5, 0], [0, 0]],
}


@pytest.mark.parametrize("stride, expected", [(1, EXPECTED_STRIDE_1), (2, EXPECTED_STRIDE_2)])
def test_shift_moves_each_channel_by_its_offset_with_zero_fill(stride, expected):
    assert OFFSETS == tuple(expected)  # channel group i takes the i-th offset, row-major
    x = torch.stack([IMAGE * (c + 1) for c in range(9)]).unsqueeze(0)  # 9 channels, one per offset
    out = Shift(9, stride)(x)
    want = torch.stack([torch.tensor(expected[o], dtype=torch.float32) * (c + 1) for c, o in enumerate(OFFSETS)])
    assert_close(out, want.unsqueeze(0), rtol=0, atol=0)


def test_shift_channel_groups_are_contiguous_and_balanced():
    assert shift_groups(9) == [(i, i + 1) for i in range(9)]
    assert shift_groups(18) == [(2 * i, 2 * i + 2) for i in range(9)]
    # channel c takes offset floor(9c/C): C = 4 uses offsets 0, 2, 4, 6
    assert [i for i, (a, b) in enumerate(shift_groups(4)) if b > a] == [0, 2, 4, 6]
    assert [b - a for a, b in shift_groups(16)] == [2, 2, 2, 2, 1, 2, 2, 2, 1]


@pytest.mark.parametrize("channels, stride", [(20, 1), (20, 2), (5, 2), (9, 1)])
def test_shift_equals_a_depthwise_conv_with_one_hot_kernels(channels, stride):
    x = torch.randn(2, channels, 7, 6, generator=torch.Generator().manual_seed(0))
    kernel = torch.zeros(channels, 1, 3, 3)
    for i, (a, b) in enumerate(shift_groups(channels)):
        dy, dx = OFFSETS[i]
        kernel[a:b, 0, 1 + dy, 1 + dx] = 1.0
    ref = nn.functional.conv2d(x, kernel, stride=stride, padding=1, groups=channels)
    assert_close(Shift(channels, stride)(x), ref, rtol=0, atol=0)


@pytest.mark.parametrize("kind, bias, params", [
    ("depthwise", False, 9 * 8 + 8 * 16),
    ("group", False, 9 * 8 * 8 // 4 + 8 * 16),
    ("shift", False, 8 * 16),
    ("depthwise", True, 9 * 8 + 8 * 16 + 16),
    ("shift", True, 8 * 16 + 16),
])
def test_parameter_counts_follow_the_formulas(kind, bias, params):
    conv = cheap_conv(kind, 8, 16, stride=2, groups=4, bias=bias)
    assert count_params(conv) == params
    assert conv(torch.zeros(3, 8, 9, 9)).shape == (3, 16, 5, 5)  # = a 3x3/2, padding 1: channels and size kept


def test_group_count_changes_group_parameters():
    assert count_params(cheap_conv("group", 16, 16, groups=2)) == 9 * 16 * 16 // 2 + 16 * 16
    assert count_params(cheap_conv("group", 16, 16, groups=16)) == 9 * 16 + 16 * 16


@pytest.mark.parametrize("kind, macs", [
    ("shift", 8 * 16 * 4 * 4),  # the shift is free; the 1x1 runs at the strided output size
    ("depthwise", 9 * 8 * 4 * 4 + 8 * 16 * 4 * 4),
    ("group", 9 * (8 // 4) * 8 * 4 * 4 + 8 * 16 * 4 * 4),
])
def test_macs_counted_by_the_flop_counter_match_the_formulas(kind, macs):
    assert count_macs(cheap_conv(kind, 8, 16, stride=2, groups=4), (8, 8, 8)) == macs


def test_group_needs_divisible_channels():
    with pytest.raises(DdnnError, match="divisible by 4.*has 6.*model.cheap_groups"):
        cheap_conv("group", 6, 8, groups=4)
    with pytest.raises(DdnnError, match="unknown cheap convolution 'fancy'"):
        cheap_conv("fancy", 8, 8)


# ----------------------------------------------------------------------------------- cheapen


def _one_model_per_family():
    """For every registered family: its smallest named depth holding the next smaller one as a
    sub-net where the family has one (new families are covered as they register)."""
    cases = {}
    for name in MODELS.names():
        family, preset = family_of(name)
        if preset is None or family.name in cases:
            continue
        depths = sorted(family.depths.items(), key=lambda kv: sum(kv[1]))
        full_name, full = depths[min(1, len(depths) - 1)]
        subs = [n for n, b in depths if b != full and all(d <= f for d, f in zip(b, full))][:1]
        cases[family.name] = (full_name, subs, len(family.widths))
    return sorted(cases.items())


FAMILIES = _one_model_per_family()


def test_every_registered_family_is_covered():
    assert {"cifar_resnet", "resnet_basic", "resnet_bottleneck"} <= {f for f, _ in FAMILIES}


def _dense_3x3_in(module: nn.Module) -> int:
    return sum(is_dense_3x3(m) for m in module.modules())


@pytest.mark.parametrize("family, case", FAMILIES, ids=[f for f, _ in FAMILIES])
@pytest.mark.parametrize("kind", ["shift", "depthwise", "group"])
def test_cheapen_every_family(family, case, kind):
    name, subnets, n_stages = case
    torch.manual_seed(0)
    builder = ModelBuilder(name, subnets, num_classes=5, in_channels=3, widths=[8] * n_stages)
    standard = builder()
    before = {k: v.clone() for k, v in standard.state_dict().items()}
    if _dense_3x3_in(standard.stages) == 0:  # an already-cheap family (e.g. depthwise blocks)
        with pytest.raises(DdnnError, match="no dense 3x3"):
            cheapen(standard, kind)
        return
    cheap = cheapen(standard, kind, groups=4)
    # a net with an empty stem (VGG) keeps the convolution that reads the image, as others keep their stem
    assert _dense_3x3_in(cheap.stages) == (0 if list(standard.stem.children()) else 1)
    assert _dense_3x3_in(cheap.stem) == _dense_3x3_in(standard.stem)  # stem and head stay
    assert str(cheap.stem) == str(standard.stem) and str(cheap.head) == str(standard.head)
    assert all(torch.equal(v, standard.state_dict()[k]) for k, v in before.items())  # the original is untouched

    shape = (3, 64, 64)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    for sub in cheap.subnets:
        cheap.train()
        out = cheap(x, sub, features=True)  # train mode: BN statistics warm up
        assert out.logits.shape == (2, 5) and len(out.stages) == n_stages
        ref = standard(x, sub, features=True)
        assert [f.shape for f in out.stages] == [f.shape for f in ref.stages]
        cheap.eval()
        static = cheap.extract(sub).eval()
        assert_close(static(x), cheap(x, sub), rtol=1e-5, atol=1e-5)
        std_static, cheap_static = standard.extract(sub), cheap.extract(sub)
        assert count_params(cheap_static) < count_params(std_static)
        assert count_macs(cheap_static, shape) < count_macs(std_static, shape)
    with pytest.raises(DdnnError, match="no dense 3x3"):
        cheapen(cheap, kind)  # nothing left to replace


def test_cheapen_resnet20_costs():
    """CIFAR ResNet-20: every block's two 3x3 convs replaced, shortcuts and stem kept."""
    standard = build_model("resnet20", num_classes=10, in_channels=3)
    costs = {}
    for kind in (None, "shift", "depthwise", "group"):
        net = standard if kind is None else cheapen(standard, kind)
        static = net.extract()
        costs[kind] = (count_params(static), count_macs(static, (3, 32, 32)))
    assert costs[None][0] == 272474
    # each 3x3 C->C' replaced: shift keeps C*C', depthwise 9C + C*C', group 9C*C/4 + C*C'
    convs = [(16, 16, 32)] * 6 + [(16, 32, 16), (32, 32, 16)] + [(32, 32, 16)] * 4 + [(32, 64, 8), (64, 64, 8)] \
        + [(64, 64, 8)] * 4
    removed = sum(9 * a * b for a, b, _ in convs)
    assert costs["shift"][0] == 272474 - removed + sum(a * b for a, b, _ in convs)
    assert costs["depthwise"][0] == 272474 - removed + sum(9 * a + a * b for a, b, _ in convs)
    assert costs["group"][0] == 272474 - removed + sum(9 * a * a // 4 + a * b for a, b, _ in convs)
    removed_macs = sum(9 * a * b * s * s for a, b, s in convs)
    assert costs["shift"][1] == costs[None][1] - removed_macs + sum(a * b * s * s for a, b, s in convs)


def test_model_cheap_config_key(tiny_config):
    cfg = tiny_config("model.cheap=shift", "model.cheap_groups=2")
    assert cfg.model.cheap == "shift" and cfg.model.cheap_groups == 2
    with pytest.raises(DdnnError, match="model.cheap"):
        tiny_config("model.cheap=fancy")
    with pytest.raises(DdnnError, match="model.cheap_groups"):
        tiny_config("model.cheap_groups=0")
    with pytest.raises(DdnnError, match="init_from.*model.cheap"):
        check_config(load_config(None, ["model.cheap=depthwise", "model.init_from=x.pth"]))
    with pytest.raises(DdnnError, match="divisible by 3"):
        build_model("resnet8", 4, 3, widths=[4, 8, 8], cheap="group", cheap_groups=3)
    net = build_model("resnet14", 4, 3, subnets=["resnet8"], widths=[4, 8, 8], cheap="depthwise")
    assert _dense_3x3_in(net.stages) == 0 and list(net.subnets) == ["resnet14", "resnet8"]
