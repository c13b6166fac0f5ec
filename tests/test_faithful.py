"""Issue 19: every place where ddnn can compute what a source computes, against values written out by
hand (loops or closed forms in this file): the online KL reduction of the cheap-conv authors' code,
the AT paper's attention scale, SSKD_SVD's clipping rule and the paper's CE-only task norm, the
authors' shift layout, and fp32 attention maps under bf16 autocast. Plus the keys, their old-run
values and the bundled configs that name a source."""

import math
import typing
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from ddnn.config import KDConfig, MethodConfig, ModelConfig, OnlineConfig, load_config, saved_config, to_dict
from ddnn.models.cost import count_macs
from ddnn.experiments.pipeline import Pipeline
from ddnn.errors import DdnnError
from ddnn.losses import AT_REDUCTIONS, CLIP_RULES, KL_REDUCTIONS, combine_gradients, distill_factor, kl_distill
from ddnn.losses.attention import at_distance, at_map, channel_sum, zsum_map
from ddnn.methods.ekd import EmbeddedKD
from ddnn.methods.individual import Individual
from ddnn.methods.kd import OfflineKD
from ddnn.methods.online import build_online, online_loss
from ddnn.methods.teachers import Teacher
from ddnn.models import ModelBuilder, build_model
from ddnn.models.cheap import LAYOUTS, Shift, cheapen

pytestmark = pytest.mark.usefixtures("one_thread")


def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


def _softmax(row, t):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


# ------------------------------------------------------------------ 1. online KL reduction


def _kl_rows(teacher, student, t):
    """Per sample: sum over classes of p_t log(p_t / p_s) at temperature t."""
    return [sum(p * math.log(p / q) for p, q in zip(_softmax(a, t), _softmax(b, t))) for a, b in zip(teacher, student)]


TEACHER = [[2.0, 0.0, -1.0, 0.5], [0.5, 1.5, 0.0, -0.5], [-1.0, 0.0, 3.0, 1.0]]  # N = 3, C = 4
STUDENT = [[1.0, 1.0, 0.0, 0.0], [0.0, 3.0, -2.0, 1.0], [0.5, 0.5, 0.5, 0.0]]


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_kl_mean_reduction_averages_over_batch_and_classes(t):
    rows = _kl_rows(TEACHER, STUDENT, t)
    n, c = len(TEACHER), len(TEACHER[0])
    teacher, student = torch.tensor(TEACHER), torch.tensor(STUDENT)
    assert kl_distill(teacher, student, t).item() == pytest.approx(t * t * sum(rows) / n, rel=1e-5)
    assert kl_distill(teacher, student, t, "mean").item() == pytest.approx(t * t * sum(rows) / (n * c), rel=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        kl_distill(teacher, student, t, "sum")


def test_online_loss_with_the_authors_kl_is_one_cth_of_the_formula():
    teacher, student, y = torch.tensor(TEACHER), torch.tensor(STUDENT), torch.tensor([0, 1, 2])
    ours = online_loss(teacher, [student], y, 4.0)
    theirs = online_loss(teacher, [student], y, 4.0, kl_reduction="mean")
    expected = 16.0 * sum(_kl_rows(TEACHER, STUDENT, 4.0)) / (3 * 4)
    assert theirs["kl.student0"].item() == pytest.approx(expected, rel=1e-5)
    assert ours["kl.student0"].item() == pytest.approx(4 * expected, rel=1e-5)  # C = 4 classes
    assert theirs["ce.student0"] == ours["ce.student0"] and theirs["ce.teacher"] == ours["ce.teacher"]


def test_online_method_uses_the_configured_kl_reduction():
    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3])
    terms = {}
    for reduction in ("batchmean", "mean"):
        torch.manual_seed(0)
        builder = ModelBuilder("resnet8", num_classes=4, in_channels=3, widths=[4, 4, 8], cheap="shift")
        cfg = MethodConfig(name="online", online=OnlineConfig(students=2, kl_reduction=reduction))
        terms[reduction] = build_online(cfg, builder).eval().forward_train(x, y)[0]
    for j in range(2):
        assert terms["mean"][f"kl.student{j}"].item() == pytest.approx(terms["batchmean"][f"kl.student{j}"].item() / 4,
                                                                        rel=1e-5)


# ------------------------------------------------------------------ 2. attention-transfer scale


def _at_by_loops(fs, ft):
    """(mean over N x H x W, sum over H x W averaged over N) of the squared difference of the
    L2-normalised channel means of F^2, written out over nested lists (N, C, H, W)."""
    n_, c_, h_, w_ = len(fs), len(fs[0]), len(fs[0][0]), len(fs[0][0][0])
    total = 0.0
    for n in range(n_):
        maps = []
        for f in (fs, ft):
            a = [sum(f[n][c][h][w] ** 2 for c in range(c_)) / c_ for h in range(h_) for w in range(w_)]
            norm = math.sqrt(sum(v * v for v in a))
            maps.append([v / norm for v in a])
        total += sum((a - b) ** 2 for a, b in zip(*maps))
    return total / (n_ * h_ * w_), total / n_


def test_at_distance_is_the_at_papers_mean_by_hand():
    gen = torch.Generator().manual_seed(3)
    s, t = torch.randn(2, 3, 3, 3, generator=gen), torch.randn(2, 3, 3, 3, generator=gen)
    mean, summed = _at_by_loops(s.tolist(), t.tolist())
    assert at_distance(s, t).item() == pytest.approx(mean, rel=1e-5)
    assert at_distance(s, t, "sum").item() == pytest.approx(summed, rel=1e-5)
    assert summed == pytest.approx(9 * mean)  # H x W = 9: the old scale was 9x the AT paper's here
    with pytest.raises(ValueError, match="reduction"):
        at_distance(s, t, "batchmean")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ekd_attention_term_with_at_by_hand(reduction):
    """beta * sum over stages of the `at` distance between each sub-net's and the full net's stage
    maps, on stages of 8x8, 4x4 and 2x2: the stages' H*W (64, 16, 4) separate the two scales."""
    torch.manual_seed(0)
    model = build_model("resnet14", 4, 3, subnets=["resnet8"], widths=[2, 4, 4]).eval()
    method = EmbeddedKD(model, MethodConfig.named("ekd-paper", alpha=0.0, beta=1000.0, attention="at",
                                                  at_reduction=reduction))
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    losses, _ = method.forward_train(x, torch.tensor([0, 1, 2]))
    full, sub = (model(x, name, features=True).stages for name in ("resnet14", "resnet8"))
    expected = 0.0
    for fs, ft in zip(sub, full):
        mean, summed = _at_by_loops(fs.tolist(), ft.tolist())
        expected += mean if reduction == "mean" else summed
    assert losses["att.resnet8"].item() == pytest.approx(1000.0 * expected, rel=1e-4)


# ------------------------------------------------------------------ 3. clipping of the Gram gradient


def _tf_clip_by_norm(t, clip_norm):
    """tf.clip_by_norm: t * clip_norm / max(||t||, clip_norm)."""
    return t * clip_norm / max(t.norm().item(), clip_norm)


def test_sskd_code_rule_by_hand():
    # min(sigmoid(e - 2), tau), tau = ||g_task|| / ||g_dist||
    assert distill_factor(1.0, 4.0, "sskd-code", 0) == pytest.approx(_sigmoid(-2))  # 0.119 < tau = 0.25
    assert distill_factor(1.0, 40.0, "sskd-code", 0) == pytest.approx(0.025)  # tau = 0.025 < 0.119
    assert distill_factor(2.0, 1.0, "sskd-code", 3) == pytest.approx(_sigmoid(1))
    assert distill_factor(0.0, 4.0, "sskd-code", 0) == 1.0  # no task gradient (an adapter): unscaled
    # where it parts from ddnn's `sskd` = min(1, sigmoid(e) * tau): the first ~5 epochs, for tau >= 1
    gaps = [distill_factor(2.0, 1.0, "sskd", e) - distill_factor(2.0, 1.0, "sskd-code", e) for e in range(10)]
    assert gaps[0] == pytest.approx(1 - _sigmoid(-2)) and all(g > 0.04 for g in gaps[:6])
    assert all(g < 0.02 for g in gaps[6:])


@pytest.mark.parametrize("epoch", [0, 1, 2, 5])
def test_sskd_code_rule_is_sskd_svd_train_py(epoch):
    """SSKD_SVD's train.py: g = g_task + clip_by_norm(g_dist * sigmoid(e - 2), ||g_task||)."""
    gen = torch.Generator().manual_seed(epoch)
    task = [torch.randn(5, generator=gen) * s for s in (1.0, 0.1, 3.0)]
    dist = [torch.randn(5, generator=gen) * s for s in (1.0, 5.0, 0.2)]
    got = combine_gradients(task, dist, "sskd-code", epoch)
    for g, gt, gd in zip(got, task, dist):
        assert_close(g, gt + _tf_clip_by_norm(gd * _sigmoid(epoch - 2), gt.norm().item()), rtol=1e-5, atol=1e-6)


def test_kd_task_norm_ce_changes_the_step():
    """The per-tensor rule against a hand-written g_ce + g_kl + f(||g_ce||) * g_gram is in
    test_kd_method.py; here: the two task norms give different steps on the same batch."""
    spec = SimpleNamespace(num_classes=5, shape=(3, 12, 12), mean=(0.5,) * 3, std=(0.25,) * 3)
    torch.manual_seed(1)
    teacher = Teacher(Individual({"resnet14": build_model("resnet14", 5, 3, subnets=[], widths=[8, 16, 16])}),
                      "resnet14", spec, spec)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 3, 12, 12, generator=gen), torch.randint(0, 5, (6,), generator=gen)
    grads = {}
    for task_norm in ("ce", "ce+kl"):
        torch.manual_seed(10)
        student = build_model("resnet8", 5, 3, subnets=[], widths=[4, 8, 8])
        method = OfflineKD(student, KDConfig(gram_weight=50.0, clip="sskd-code", task_norm=task_norm))
        method.attach([teacher])
        losses, _ = method.forward_train(x, y)
        method.backward(losses, lambda t: t, epoch=1)
        grads[task_norm] = [p.grad.clone() for p in method.parameters() if p.grad is not None]
    assert any(not torch.allclose(a, b) for a, b in zip(grads["ce"], grads["ce+kl"]))


# ------------------------------------------------------------------ 4. the authors' shift layout


def _authors_shift_by_loops(x, stride):
    """The shiftnet kernel's indexing: channel c < 9 * floor(C/9) reads (y + ((c // 3) % 3) - 1,
    x + (c % 3) - 1), zero outside; the last C mod 9 channels are copied; then every s-th pixel."""
    n_, c_, h_, w_ = len(x), len(x[0]), len(x[0][0]), len(x[0][0][0])
    shifted = c_ // 9 * 9
    out = []
    for n in range(n_):
        chans = []
        for c in range(c_):
            dy, dx = (((c // 3) % 3) - 1, (c % 3) - 1) if c < shifted else (0, 0)
            rows = []
            for y in range(0, h_, stride):
                rows.append([x[n][c][y + dy][xx + dx] if 0 <= y + dy < h_ and 0 <= xx + dx < w_ else 0.0
                             for xx in range(0, w_, stride)])
            chans.append(rows)
        out.append(chans)
    return torch.tensor(out)


@pytest.mark.parametrize("channels, stride", [(20, 1), (20, 2), (9, 1), (4, 1), (13, 2)])
def test_authors_shift_layout_by_loops(channels, stride):
    x = torch.randn(2, channels, 5, 6, generator=torch.Generator().manual_seed(channels))
    got = Shift(channels, stride, layout="authors")(x)
    assert_close(got, _authors_shift_by_loops(x.tolist(), stride), rtol=0, atol=0)
    if channels < 9:  # no full group of 9: nothing moves
        assert torch.equal(got, x)
    # ddnn's layout (contiguous groups, floor(9c/C)) is another map, except at C = 9 where floor(9c/C) = c mod 9
    assert torch.equal(Shift(channels, stride)(x), got) == (channels == 9)


def test_authors_layout_puts_the_stride_on_the_blocks_second_1x1():
    net = cheapen(build_model("resnet20", 10, 3, subnets=[]), "shift", layout="authors")
    first, second = net.stages[1][0].body[0], net.stages[1][0].body[3]  # the cheap forms of the two 3x3s
    assert [m.stride for m in (first[0], second[0])] == [1, 1]  # both shifts at full resolution
    assert [first[1].stride, second[1].stride] == [(1, 1), (2, 2)]  # the second 1x1 downsamples
    assert {m.layout for m in net.modules() if isinstance(m, Shift)} == {"authors"}
    x = torch.randn(2, 16, 32, 32)
    block = net.stages[1][0].bind(net.full.name).eval()
    assert first(x).shape == (2, 32, 32, 32) and block(x).shape == (2, 32, 16, 16)
    # MACs: the authors' ShiftBlock.flops, int_h*int_w*in*mid + out_h*out_w*mid*out (+ in*out*out_h*out_w
    # for a projection shortcut), stem H*W*9*3*16 and classifier 64*10, written out for ResNet-20
    blocks = (3 * 2 * 32 * 32 * 16 * 16
              + (32 * 32 * 16 * 32 + 16 * 16 * 32 * 32 + 16 * 32 * 16 * 16) + 2 * 2 * 16 * 16 * 32 * 32
              + (16 * 16 * 32 * 64 + 8 * 8 * 64 * 64 + 32 * 64 * 8 * 8) + 2 * 2 * 8 * 8 * 64 * 64)
    assert count_macs(net.extract(), (3, 32, 32)) == 32 * 32 * 9 * 3 * 16 + blocks + 64 * 10
    ddnn = cheapen(build_model("resnet20", 10, 3, subnets=[]), "shift")
    # ddnn runs the transition blocks' first 1x1 at the output resolution instead
    assert count_macs(net.extract(), (3, 32, 32)) - count_macs(ddnn.extract(), (3, 32, 32)) == \
        16 * 32 * (32 * 32 - 16 * 16) + 32 * 64 * (16 * 16 - 8 * 8)


@pytest.mark.parametrize("kind", ["depthwise", "group"])
def test_authors_layout_for_depthwise_and_group_blocks(kind):
    """The authors' DWBlock and GroupBlock also run their first cheap conv at stride 1 and stride the second 1x1."""
    net = cheapen(build_model("resnet8", 10, 3, subnets=[], widths=[8, 16, 32]), kind, layout="authors")
    block = net.stages[2][0].body
    assert [block[0][0].stride, block[0][1].stride, block[3][0].stride, block[3][1].stride] == \
        [(1, 1), (1, 1), (1, 1), (2, 2)]


def test_authors_layout_keeps_subnets_extraction_and_refuses_bottlenecks():
    torch.manual_seed(0)
    net = build_model("resnet14", 4, 3, subnets=["resnet8"], widths=[9, 18, 18], cheap="shift", cheap_layout="authors")
    x = torch.randn(2, 3, 16, 16)
    net.train()
    net(x, "resnet8")  # BN statistics move off their initial values
    net.eval()
    for name in ("resnet14", "resnet8"):
        assert_close(net.extract(name).eval()(x), net(x, name), rtol=1e-5, atol=1e-5)
    with pytest.raises(DdnnError, match="cheap_layout=authors"):
        build_model("resnet26", 4, 3, subnets=[], widths=[4, 4, 4, 4], cheap="shift", cheap_layout="authors")
    with pytest.raises(DdnnError, match="cheap layout"):
        cheapen(build_model("resnet8", 4, 3, subnets=[]), "shift", layout="theirs")


# ------------------------------------------------------------------ 5. attention maps under bf16 autocast


def test_attention_maps_under_bf16_autocast_are_fp32_maps_of_the_bf16_features():
    f = (torch.randn(2, 64, 4, 4, generator=torch.Generator().manual_seed(0)) * 3 + 1).to(torch.bfloat16)
    f32 = f.float()  # the same bf16 values, exactly
    total = f32.sum(1).flatten(1)
    centred = total - total.mean(1, keepdim=True)
    zsum_ref = centred / (centred.pow(2).mean(1, keepdim=True).sqrt() + 1e-6)
    energy = f32.pow(2).mean(1).flatten(1)
    at_ref = energy / energy.norm(dim=1, keepdim=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got_sum, got_zsum, got_at = channel_sum(f), zsum_map(f), at_map(f)
        # the path before the fix: the 1x1 channel sum left to autocast, then .float()
        old_sum = F.conv2d(f, f.new_ones(1, 64, 1, 1)).flatten(1).float()
        old_at = F.conv2d(f * f, f.new_ones(1, 64, 1, 1)).flatten(1).float() / 64
    assert got_sum.dtype == got_zsum.dtype == got_at.dtype == torch.float32
    assert_close(got_sum, total, rtol=1e-6, atol=1e-5)
    assert_close(got_zsum, zsum_ref, rtol=1e-5, atol=1e-5)
    assert_close(got_at, at_ref, rtol=1e-5, atol=1e-6)
    # the old path rounded each map to bf16: errors hundreds of times fp32's
    assert (old_sum - total).abs().max() > 1e-2 > 100 * (got_sum - total).abs().max()
    assert ((old_at - energy) / energy).abs().max() > 1e-3
    # the gradient still reaches the bf16 feature in its own dtype
    g = f.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        zsum_map(g).pow(2).sum().backward()
    assert g.grad.dtype == torch.bfloat16 and g.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channel_sum_gradients_by_hand(dtype):
    """d/dF of sum_p w_p * sum_c F_c,p is w_p; of sum_p w_p * sum_c F_c,p^2 it is 2 F_c,p w_p: dense,
    in the feature's dtype and channels_last layout."""
    gen = torch.Generator().manual_seed(4)
    f = torch.randn(2, 5, 3, 4, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(2, 12, generator=gen)
    for square, want in ((False, w.view(2, 1, 3, 4).expand(2, 5, 3, 4)), (True, 2 * f.float() * w.view(2, 1, 3, 4))):
        g = f.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            (channel_sum(g, square=square) * w).sum().backward()
        assert g.grad.dtype == dtype and g.grad.is_contiguous(memory_format=torch.channels_last)
        assert_close(g.grad, want.to(dtype), rtol=0, atol=0)


# ------------------------------------------------------------------ keys, old runs, bundled configs


def test_config_choices_are_the_implemented_ones():
    hints = {cls: typing.get_type_hints(cls) for cls in (ModelConfig, MethodConfig, OnlineConfig, KDConfig)}
    assert typing.get_args(hints[ModelConfig]["cheap_layout"]) == LAYOUTS
    assert typing.get_args(hints[MethodConfig]["at_reduction"]) == AT_REDUCTIONS
    assert typing.get_args(hints[OnlineConfig]["kl_reduction"]) == KL_REDUCTIONS
    assert typing.get_args(hints[KDConfig]["clip"]) == CLIP_RULES


def test_new_keys_defaults_choices_and_old_run_values():
    cfg = load_config(None, [])
    assert (cfg.model.cheap_layout, cfg.method.at_reduction, cfg.method.online.kl_reduction,
            cfg.method.kd.task_norm, cfg.method.kd.clip) == ("ddnn", "mean", "batchmean", "ce", "sskd")
    for key in ("model.cheap_layout=theirs", "method.at_reduction=batchmean", "method.online.kl_reduction=sum",
                "method.kd.task_norm=kl", "method.kd.clip=sskd-tf"):
        with pytest.raises(DdnnError, match=key.split("=")[0].replace(".", r"\.")):
            load_config(None, [key])
    # a run saved before these keys existed reads back with what it did then
    old = to_dict(load_config(None, ["method=kd", "method.kd.teachers=[x]"]))
    for section, key in (("model", "cheap_layout"), ("method", "at_reduction")):
        del old[section][key]
    del old["method"]["online"]["kl_reduction"], old["method"]["kd"]["task_norm"]
    before = saved_config(old)
    assert (before.model.cheap_layout, before.method.at_reduction, before.method.online.kl_reduction,
            before.method.kd.task_norm) == ("ddnn", "sum", "batchmean", "ce+kl")
    assert before.method.kd.teachers == ["x"] and before.method.online.students == 4  # the rest stays
    current = load_config(None, ["method.at_reduction=mean", "method.kd.task_norm=ce"])
    assert saved_config(to_dict(current)) == current


@pytest.mark.parametrize("kind", ["shift", "depthwise", "group"])
def test_online_cifar_configs_follow_the_authors_code(kind):
    cfg = load_config(f"online/cifar10-resnet56-{kind}", [])
    assert cfg.method.online.kl_reduction == "mean" and cfg.model.cheap_layout == "authors"
    assert (cfg.method.online.students, cfg.method.online.temperature, cfg.model.cheap) == (4, 4.0, kind)
    demo = load_config("online/mnist5k-demo", [])  # ddnn's own demo keeps ddnn's choices
    assert demo.method.online.kl_reduction == "batchmean" and demo.model.cheap_layout == "ddnn"


@pytest.mark.parametrize("pipeline", ["kd/cifar100-vgg11-vgg6", "kd/cifar100-resnet32-resnet8",
                                      "kd/cifar100-resnet50-18-10"])
def test_kd_configs_clip_as_the_code_the_paper_follows(pipeline):
    students = [s["cfg"] for s in Pipeline(pipeline).stages if s["cfg"].method.name == "kd"]
    assert students and all(c.method.kd.clip == "sskd-code" and c.method.kd.task_norm == "ce" for c in students)
