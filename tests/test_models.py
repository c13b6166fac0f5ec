"""DynamicNet / ResNet families: sizes, extraction, depth switching, private BN, errors and MACs."""

import copy

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from ddnn.models.cost import count_macs, count_params
from ddnn.errors import DdnnError
from ddnn.models import Features, SubNet, build_model
from ddnn.models.dynamic import ResidualBlock
from ddnn.models.norm import Keyed, PrivateNorm, SharedNorm
from ddnn.models.static import PadShortcut, Residual

REFERENCE_PARAMS = {
    # name: (num_classes, parameters of the standard architecture)
    "resnet20": (10, 272474),
    "resnet56": (10, 855770),
    "resnet18": (1000, 11689512),
    "resnet34": (1000, 21797672),
    "resnet50": (1000, 25557032),
}




@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These nets are tiny; with 2 intra-op threads and another process busy on the CPU, OpenMP
    spin-waiting made this file 5-15x slower (85 s vs 5 s measured). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------- helpers


def _randomise_bn_affine(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm its own affine params, so using the wrong (private) BN shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))


def _warm_bn(model: nn.Module, names, shape, passes: int = 2, seed: int = 0) -> None:
    """Train-mode forward passes per sub-net on random data (a different distribution per sub-net)."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for i, name in enumerate(names):
            for _ in range(passes):
                model(torch.randn(shape, generator=g) * (1.0 + 0.5 * i) + 0.3 * i, subnet=name)


def _check_private_stats(model: nn.Module, passes: int) -> None:
    """Every private BN copy saw exactly its own sub-net's passes, and copies hold different stats."""
    shared_positions = 0
    for m in model.modules():
        if not isinstance(m, PrivateNorm):
            continue
        keys = list(m.norms)
        for k in keys:
            bn = m.norms[k]
            assert int(bn.num_batches_tracked) == passes, (k, int(bn.num_batches_tracked))
            assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                shared_positions += 1
                assert not torch.allclose(m.norms[a].running_mean, m.norms[b].running_mean), (a, b)
    assert shared_positions > 0


def _conv_linear_macs(module: nn.Module, input_shape) -> int:
    """Sum over convs of Cout*Cin/groups*kh*kw*Hout*Wout plus in*out per linear, from hooked output shapes."""
    total = 0
    hooks = []

    def on_conv(m, inp, out):
        nonlocal total
        kh, kw = m.kernel_size
        total += m.out_channels * (m.in_channels // m.groups) * kh * kw * out.shape[2] * out.shape[3]

    def on_linear(m, inp, out):
        nonlocal total
        total += m.in_features * m.out_features

    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(on_conv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(on_linear))
    module.eval()
    with torch.no_grad():
        module(torch.zeros(1, *input_shape))
    for h in hooks:
        h.remove()
    return total


def _cifar_resnet_macs_by_hand(n: int, widths=(16, 32, 64), in_ch: int = 3, hw: int = 32, classes: int = 10) -> int:
    """CIFAR ResNet-6n+2 with projection shortcuts, layer by layer."""
    macs = widths[0] * in_ch * 9 * hw * hw  # stem 3x3
    cin = widths[0]
    for s, w in enumerate(widths):
        if s > 0:
            hw //= 2
        for i in range(n):
            macs += w * cin * 9 * hw * hw + w * w * 9 * hw * hw  # two 3x3 convs
            if cin != w:
                macs += w * cin * 1 * hw * hw  # 1x1 projection shortcut
            cin = w
    return macs + cin * classes


# --------------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("name", list(REFERENCE_PARAMS))
def test_param_counts_match_reference(name):
    classes, expected = REFERENCE_PARAMS[name]
    torch.manual_seed(0)
    shared = build_model(name, classes, 3, bn="shared")
    assert count_params(shared) == expected
    assert count_params(shared.extract()) == expected


@pytest.mark.parametrize(
    "name, sub", [("resnet20", "resnet8"), ("resnet56", "resnet20"), ("resnet18", "resnet10"),
                  ("resnet34", "resnet18"), ("resnet50", "resnet26")],
)
def test_extracted_full_net_of_private_model_has_reference_size(name, sub):
    classes, expected = REFERENCE_PARAMS[name]
    torch.manual_seed(0)
    model = build_model(name, classes, 3, subnets=[sub])
    assert count_params(model) > expected  # private BN copies for the sub-net
    assert count_params(model.extract()) == expected
    assert count_params(model.extract(name)) == expected
    if sub in REFERENCE_PARAMS:
        assert count_params(model.extract(sub)) == REFERENCE_PARAMS[sub][1]


def test_family_name_with_blocks_equals_preset():
    fam = build_model("cifar_resnet", 10, 3, blocks=[3, 3, 3], bn="shared")
    assert fam.full.name == "resnet20" and fam.max_blocks == (3, 3, 3)
    assert count_params(fam) == REFERENCE_PARAMS["resnet20"][1]


def test_pad_shortcut_resnet20_size():
    # option A: the two 1x1 projection convs (16->32, 32->64) and their BNs disappear
    model = build_model("resnet20", 10, 3, bn="shared", shortcut="pad")
    assert count_params(model) == 272474 - (16 * 32 + 32 * 64) - 2 * (32 + 64) == 269722


def test_pad_shortcut_values():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    out = PadShortcut(2, 2)(x)
    assert out.shape == (1, 4, 2, 2)
    assert torch.equal(out[0, 0], torch.zeros(2, 2)) and torch.equal(out[0, 3], torch.zeros(2, 2))
    assert torch.equal(out[0, 1], x[0, 0, ::2, ::2]) and torch.equal(out[0, 2], x[0, 1, ::2, ::2])


# --------------------------------------------------------------------------------------------- extraction


EXTRACTION_CASES = {
    "cifar56": dict(name="resnet56", classes=10, subnets=["resnet44", "resnet32", "resnet20"], kwargs={},
                    shape=(4, 3, 32, 32)),
    "cifar_pad": dict(name="resnet32", classes=10, subnets=["resnet20", "resnet8"], kwargs={"shortcut": "pad"},
                      shape=(4, 3, 32, 32)),
    "resnet34": dict(name="resnet34", classes=10, subnets=["resnet18", [1, 2, 3, 1]], kwargs={"stem": "cifar"},
                     shape=(2, 3, 32, 32)),
    "resnet50": dict(name="resnet50", classes=10, subnets=["resnet26"], kwargs={"stem": "imagenet"},
                     shape=(2, 3, 64, 64)),
}


@pytest.mark.parametrize("case", list(EXTRACTION_CASES))
def test_extraction_equals_dynamic_forward(case):
    c = EXTRACTION_CASES[case]
    torch.manual_seed(0)
    model = build_model(c["name"], c["classes"], 3, subnets=c["subnets"], **c["kwargs"])
    names = list(model.subnets)
    assert len(names) == 1 + len(c["subnets"])
    _randomise_bn_affine(model)
    _warm_bn(model, names, c["shape"], passes=2)
    _check_private_stats(model, passes=2)

    model.eval()
    x = torch.randn(c["shape"], generator=torch.Generator().manual_seed(123))
    outs = {}
    with torch.no_grad():
        for name in names:
            static = model.extract(name).eval()
            expected = model(x, subnet=name)
            assert_close(static(x), expected, atol=1e-5, rtol=1e-5)
            assert expected.shape == (c["shape"][0], c["classes"])
            outs[name] = expected
    # the sub-nets really are different functions
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.allclose(outs[a], outs[b])
    if case == "cifar_pad":
        assert any(isinstance(m, PadShortcut) for m in model.extract("resnet8").modules())


def test_extraction_with_subnet_value_and_default():
    torch.manual_seed(0)
    model = build_model("resnet14", 10, 3, subnets=["resnet8"])
    _warm_bn(model, list(model.subnets), (4, 3, 16, 16))
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        by_value = model.extract(SubNet("resnet8", (1, 1, 1))).eval()
        assert torch.equal(by_value(x), model(x, "resnet8"))
        assert torch.equal(model.extract().eval()(x), model(x))
        assert torch.equal(model(x), model(x, "resnet14"))


def test_extraction_mode_and_independence():
    torch.manual_seed(0)
    model = build_model("resnet14", 10, 3, subnets=["resnet8"])
    assert model.extract("resnet8").training
    model.eval()
    static = model.extract("resnet8")
    assert not static.training and not any(m.training for m in static.modules())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = model(x, "resnet8")
        for p in static.parameters():
            p.zero_()
        assert torch.equal(model(x, "resnet8"), before)  # the extraction holds copies


def _assert_plain(module: nn.Module) -> None:
    for m in module.modules():
        cls = type(m)
        assert cls in (Residual, PadShortcut) or cls.__module__.startswith("torch.nn."), cls
        assert not isinstance(m, (Keyed, ResidualBlock))


@pytest.mark.parametrize("shortcut", ["conv", "pad"])
def test_extracted_module_is_plain_torch(shortcut):
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 3, subnets=["resnet8"], shortcut=shortcut)
    for name in model.subnets:
        static = model.extract(name)
        assert isinstance(static, nn.Sequential)
        _assert_plain(static)
        assert sum(isinstance(m, Residual) for m in static.modules()) == 3 * model.subnets[name].blocks[0]


def test_extracted_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet32", 10, 3, subnets=["resnet20", "resnet8"])
    _randomise_bn_affine(model, seed=1)
    _warm_bn(model, list(model.subnets), (4, 3, 32, 32))
    model.eval()
    path = tmp_path / "resnet20.pt"
    src = model.extract("resnet20").eval()
    torch.save(src.state_dict(), path)

    torch.manual_seed(99)
    other = build_model("resnet32", 10, 3, subnets=["resnet20", "resnet8"]).extract("resnet20").eval()
    _assert_plain(other)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(other(x), src(x))  # different init
        result = other.load_state_dict(torch.load(path))
        assert not result.missing_keys and not result.unexpected_keys
        assert_close(other(x), src(x), atol=1e-5, rtol=1e-5)
        assert_close(other(x), model(x, "resnet20"), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------- depth switching


def test_features_shapes_and_consistency():
    torch.manual_seed(0)
    model = build_model("resnet56", 10, 3, subnets=["resnet20"])
    _warm_bn(model, list(model.subnets), (4, 3, 32, 32))
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for name in model.subnets:
            f = model(x, name, features=True)
            assert isinstance(f, Features)
            assert f._fields == ("logits", "stem", "stages")
            assert torch.equal(f.logits, model(x, name))
            assert f.stem.shape == (2, 16, 32, 32)
            assert [tuple(t.shape) for t in f.stages] == [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)]
            # the feature points are what the extracted layers compute at those points
            static = model.extract(name).eval()
            h = static[0](x)
            assert_close(f.stem, h, atol=1e-5, rtol=1e-5)
            i = 1
            for depth, stage_out in zip(model.subnets[name].blocks, f.stages):
                for _ in range(depth):
                    h = static[i](h)
                    i += 1
                assert_close(stage_out, h, atol=1e-5, rtol=1e-5)
            assert_close(f.logits, static[i](h), atol=1e-5, rtol=1e-5)


def test_imagenet_features_shapes():
    torch.manual_seed(0)
    model = build_model("resnet50", 10, 3, subnets=["resnet26"], stem="imagenet")
    model.eval()
    with torch.no_grad():
        f = model(torch.randn(1, 3, 64, 64), "resnet26", features=True)
    assert f.stem.shape == (1, 64, 16, 16)
    assert [tuple(t.shape) for t in f.stages] == [(1, 256, 16, 16), (1, 512, 8, 8), (1, 1024, 4, 4), (1, 2048, 2, 2)]


@pytest.mark.parametrize("name, sub, blocks", [("resnet56", "resnet20", (3, 3, 3)),
                                               ("resnet34", [1, 2, 3, 1], (1, 2, 3, 1))])
def test_subnet_runs_exactly_first_blocks(name, sub, blocks):
    torch.manual_seed(0)
    model = build_model(name, 10, 3, subnets=[sub], stem="cifar")
    subname = list(model.subnets)[1]
    assert model.subnets[subname].blocks == blocks
    ran = []
    for s, stage in enumerate(model.stages):
        for i, block in enumerate(stage):  # a block's first conv runs in both the keyed and the plan path
            block.body[0].register_forward_hook(lambda m, inp, out, s=s, i=i: ran.append((s, i)))
    for training in (True, False):  # keyed path (training) and the eval-mode plan
        model.train(training)
        ran.clear()
        with torch.no_grad():
            model(torch.randn(2, 3, 32, 32), subname)
            assert ran == [(s, i) for s, d in enumerate(blocks) for i in range(d)]
            ran.clear()
            model(torch.randn(2, 3, 32, 32))
            assert ran == [(s, i) for s, d in enumerate(model.max_blocks) for i in range(d)]


def test_blocks_beyond_depth_do_not_affect_subnet():
    torch.manual_seed(0)
    model = build_model("resnet56", 10, 3, subnets=["resnet20"])
    _randomise_bn_affine(model)
    _warm_bn(model, list(model.subnets), (4, 3, 32, 32))
    model.eval()
    x = torch.randn(2, 3, 32, 32)

    def zero_convs(block):
        with torch.no_grad():
            for m in block.modules():
                if isinstance(m, nn.Conv2d):
                    m.weight.zero_()

    with torch.no_grad():
        sub_before, full_before = model(x, "resnet20"), model(x)
        for stage in model.stages:  # block 3 (0-based) is the first one resnet20 skips
            zero_convs(stage[3])
        assert torch.equal(model(x, "resnet20"), sub_before)
        full_after = model(x)
        assert not torch.allclose(full_after, full_before)
        zero_convs(model.stages[2][2])  # the last block resnet20 does run
        assert not torch.allclose(model(x, "resnet20"), sub_before)


def test_switching_is_stateless():
    torch.manual_seed(0)
    model = build_model("resnet32", 10, 3, subnets=["resnet20", "resnet8"])
    _randomise_bn_affine(model)
    _warm_bn(model, list(model.subnets), (4, 3, 32, 32))
    model.eval()
    state = copy.deepcopy(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        first = model(x)
        sub = model(x, "resnet8")
        again = model(x)
        mid = model(x, "resnet20")
        assert torch.equal(first, again) and torch.equal(model(x), first)
        assert torch.equal(model(x, "resnet8"), sub) and torch.equal(model(x, "resnet20"), mid)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


# --------------------------------------------------------------------------------------------- BN


def test_shared_vs_private_bn_counts():
    torch.manual_seed(0)
    shared = build_model("resnet14", 10, 3, subnets=["resnet8"], bn="shared")
    private = build_model("resnet14", 10, 3, subnets=["resnet8"], bn="private")
    # Positions resnet8 (1,1,1) also runs: stem BN(16); stage 1 block 0: BN(16) x2 (identity shortcut);
    # stage 2 block 0: BN(32) x2 + shortcut BN(32); stage 3 block 0: BN(64) x2 + shortcut BN(64).
    extra_bn_channels = [16] + [16, 16] + [32, 32, 32] + [64, 64, 64]
    extra_params = sum(2 * c for c in extra_bn_channels)  # weight + bias per channel
    assert extra_params == 672
    assert count_params(private) - count_params(shared) == extra_params

    n_bn = lambda m: sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())  # noqa: E731
    # resnet14: stem 1 + stage 1: 2+2 + stages 2 and 3: (3+2) each = 15 positions
    assert n_bn(shared) == 15
    assert n_bn(private) == 15 + len(extra_bn_channels)
    assert all(not isinstance(m, PrivateNorm) for m in shared.modules())
    assert sum(isinstance(m, SharedNorm) for m in shared.modules()) == 15
    # private: two copies where both run, one where only resnet14 runs
    sizes = sorted(len(m.norms) for m in private.modules() if isinstance(m, PrivateNorm))
    assert sizes == [1] * 6 + [2] * 9
    assert count_params(shared.extract()) == count_params(private.extract())
    assert count_params(shared.extract("resnet8")) == count_params(private.extract("resnet8"))


def test_shared_bn_statistics_are_shared():
    torch.manual_seed(0)
    model = build_model("resnet14", 10, 3, subnets=["resnet8"], bn="shared")
    stem_bn = model.stem[1].norm
    before = stem_bn.running_mean.clone()
    _warm_bn(model, ["resnet8"], (4, 3, 16, 16), passes=1)
    assert not torch.equal(stem_bn.running_mean, before)  # a sub-net pass moves the full net's stats
    assert int(stem_bn.num_batches_tracked) == 1
    # with shared BN any valid depth vector runs, configured or not
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 16, 16), SubNet("other", (2, 1, 2)))
    assert out.shape == (2, 10)


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(name="resnet57"), "resnet57"),
        (dict(name="resnet56", subnets=["resnet18"]), "resnet18"),
        (dict(name="resnet56", subnets=[[10, 1, 1]]), "[10, 1, 1]"),
        (dict(name="resnet56", subnets=[[3, 3]]), "[3, 3]"),
        (dict(name="resnet56", subnets=[[0, 3, 3]]), "[0, 3, 3]"),
        (dict(name="resnet56", subnets=["resnet56"]), "resnet56"),
        (dict(name="resnet56", subnets=[[9, 9, 9]]), "full net"),
        (dict(name="resnet56", subnets=["resnet20", [3, 3, 3]]), "[3, 3, 3]"),
        (dict(name="cifar_resnet"), "cifar_resnet"),
        (dict(name="resnet_basic"), "resnet_basic"),
    ],
)
def test_build_errors(kwargs, needle):
    name = kwargs.pop("name")
    with pytest.raises(DdnnError) as err:
        build_model(name, 10, 3, **kwargs)
    assert needle in str(err.value)


def test_full_net_as_subnet_message():
    with pytest.raises(DdnnError, match="full net"):
        build_model("resnet56", 10, 3, subnets=["resnet56"])


def test_forward_errors():
    torch.manual_seed(0)
    model = build_model("resnet14", 10, 3, subnets=["resnet8"])
    model.eval()
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(DdnnError, match="resnet99"):
        model(x, "resnet99")
    with pytest.raises(DdnnError, match="resnet18"):
        model(x, "resnet18")  # a real name, but not of this model
    with pytest.raises(DdnnError, match="mine"):  # valid depths, but no private BN for it
        model(x, SubNet("mine", (2, 1, 2)))
    with pytest.raises(DdnnError, match="mine"):
        model.extract(SubNet("mine", (1, 1, 1)))
    with pytest.raises(DdnnError, match=r"\[3, 1, 1\]"):
        model(x, SubNet("bad", (3, 1, 1)))
    with pytest.raises(DdnnError, match=r"\[1, 1\]"):
        model(x, SubNet("bad", (1, 1)))
    with pytest.raises(DdnnError):
        model.extract("resnet99")


# --------------------------------------------------------------------------------------------- MACs


def test_resnet20_macs_by_hand():
    torch.manual_seed(0)
    static = build_model("resnet20", 10, 3).extract()
    expected = _cifar_resnet_macs_by_hand(3)
    assert expected == 40_813_184  # 40.8 M with projection shortcuts (40.55 M with option A)
    assert _conv_linear_macs(static, (3, 32, 32)) == expected
    static.train()
    assert count_macs(static, (3, 32, 32)) == expected
    assert static.training  # mode restored


def test_subnet_macs_by_hand():
    torch.manual_seed(0)
    model = build_model("resnet56", 10, 3, subnets=["resnet20", "resnet8"])
    for n, name in [(9, "resnet56"), (3, "resnet20"), (1, "resnet8")]:
        assert count_macs(model.extract(name), (3, 32, 32)) == _cifar_resnet_macs_by_hand(n)


def test_resnet18_macs_imagenet():
    torch.manual_seed(0)
    static = build_model("resnet18", 1000, 3, bn="shared").extract()
    macs = count_macs(static, (3, 224, 224))
    assert macs == _conv_linear_macs(static, (3, 224, 224))
    assert abs(macs - 1.82e9) / 1.82e9 < 0.01


def test_users_counts_the_nets_that_run_each_parameter():
    """ResNet-32 holding 20/14/8 (5/3/2/1 blocks per stage): the stem and each stage's first block run
    in all 4 nets, the second block in 3, the third in 2, the fourth and fifth in the full net only; a
    private BN or classifier in 1."""
    net = build_model("resnet32", 10, 1, subnets=["resnet20", "resnet14", "resnet8"], widths=(4, 8, 16),
                      head="private")
    users = net.users()
    assert {users[id(p)] for p in net.stem.parameters() if p.ndim == 4} == {4}
    assert {users[id(p)] for p in net.stem.parameters() if p.ndim == 1} == {1}  # private BN: one net each
    for stage in net.stages:
        assert [{users[id(p)] for p in block.parameters() if p.ndim == 4} for block in stage] == \
            [{4}, {3}, {2}, {1}, {1}]
    assert {users[id(p)] for p in net.head.parameters()} == {1}
    assert sum(users.values()) == sum(sum(1 for _ in net._plan(s).parameters()) for s in net.subnets.values())
