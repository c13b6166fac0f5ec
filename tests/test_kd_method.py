"""The kd method in memory: K-teacher averaging, adapters, the clipped backward against the
hand-written rule, and frozen teachers."""

import math
from types import SimpleNamespace

import pytest
import torch

from ddnn.config import KDConfig
from ddnn.losses import cross_pairs, gram_loss, kl_distill
from ddnn.methods.individual import Individual
from ddnn.methods.kd import OfflineKD
from ddnn.methods.teachers import Teacher
from ddnn.models import build_model

SPEC = SimpleNamespace(num_classes=5, shape=(3, 12, 12), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


pytestmark = pytest.mark.usefixtures("one_thread")


def teacher(seed: int, widths=(8, 16, 16)) -> Teacher:
    torch.manual_seed(seed)
    net = build_model("resnet14", 5, 3, subnets=[], widths=list(widths))
    return Teacher(Individual({"resnet14": net}), "resnet14", SPEC, SPEC)


def student_kd(teachers, **kd) -> OfflineKD:
    torch.manual_seed(10)
    method = OfflineKD(build_model("resnet8", 5, 3, subnets=[], widths=[4, 8, 8]), KDConfig(**kd))
    method.attach(teachers)
    return method


def batch(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(6, 3, 12, 12, generator=gen), torch.randint(0, 5, (6,), generator=gen)


def test_losses_average_over_teachers():
    teachers = [teacher(1), teacher(2)]
    method = student_kd(teachers, temperature=2.0, kl_weight=0.5, gram_weight=3.0, cross=3)
    x, y = batch()
    losses, logits = method.forward_train(x, y)
    assert set(losses) == {"ce.resnet8", "kl.resnet8", "gram.resnet8"}
    s_logits, s_points = method.feature_points(x, "resnet8")
    torch.testing.assert_close(logits["resnet8"], s_logits)
    kls, grams = [], []
    for k, t in enumerate(teachers):
        t_logits, t_points = t(x)
        kls.append(kl_distill(t_logits, s_logits, 2.0))
        mapped = [method.adapters[f"t{k}_p{i}"](p) for i, p in enumerate(t_points)]
        grams.append(gram_loss(s_points, mapped, cross_pairs(4, 3)))
    torch.testing.assert_close(losses["kl.resnet8"], 0.5 * (kls[0] + kls[1]) / 2)
    torch.testing.assert_close(losses["gram.resnet8"], 3.0 * (grams[0] + grams[1]) / 2)
    assert kls[0] != kls[1]  # two different teachers, so the average is not one of them


def test_adapters_only_where_widths_differ_trainable_and_not_in_the_student():
    # teacher points (stem, stages) have 4, 4, 8, 16 channels; the student's 4, 4, 8, 8
    method = student_kd([teacher(1, widths=(4, 8, 16))])
    assert list(method.adapters) == ["t0_p3"]
    conv, bn = method.adapters["t0_p3"]
    assert tuple(conv.weight.shape) == (8, 16, 1, 1) and bn.num_features == 8
    x, y = batch()
    losses, _ = method.forward_train(x, y)
    method.backward(losses, lambda t: t, epoch=1)
    assert conv.weight.grad is not None and conv.weight.grad.abs().max() > 0
    assert all(p.requires_grad for p in method.adapters.parameters())
    # the exported student is the bare student: same modules and parameter count with or without adapters
    plain = method.extract("resnet8")
    n_adapter = sum(p.numel() for p in method.adapters.parameters())
    assert n_adapter == 16 * 8 + 2 * 8
    student_only = sum(p.numel() for p in method.student.parameters())
    assert sum(p.numel() for p in plain.parameters()) == student_only
    assert sum(p.numel() for p in method.parameters()) == student_only + n_adapter
    assert not any(isinstance(m, torch.nn.Conv2d) and m.in_channels == 16 and m.out_channels == 8
                   for m in plain.modules())
    # a kd run evaluated later (no teachers, so no adapters) loads its checkpoint without them
    bare = OfflineKD(build_model("resnet8", 5, 3, subnets=[], widths=[4, 8, 8]), KDConfig(teachers=["x"]))
    bare.load_state_dict(method.state_dict())
    torch.testing.assert_close(bare.student.eval()(x), method.student.eval()(x))


def test_no_adapter_when_widths_match_and_off_refuses_a_mismatch():
    assert not student_kd([teacher(1, widths=(4, 8, 8))]).adapters
    with pytest.raises(Exception, match="adapters=auto"):
        student_kd([teacher(1)], adapters="off")


def manual_expectation(method: OfflineKD, rule, epoch, task_norm="ce"):
    """The combined gradient per tensor, written out: g_ce + g_kl + f * g_gram, with f from the norm
    of the CE gradient (`task_norm="ce"`, eq. 14) or of the CE + KL gradient (`"ce+kl"`)."""
    x, y = batch()
    losses, _ = method.forward_train(x, y)
    params = [p for p in method.parameters() if p.requires_grad]
    g_ce = torch.autograd.grad(losses["ce.resnet8"], params, retain_graph=True, allow_unused=True)
    g_kl = torch.autograd.grad(losses["kl.resnet8"], params, retain_graph=True, allow_unused=True)
    g_gram = torch.autograd.grad(losses["gram.resnet8"], params, retain_graph=True, allow_unused=True)
    expected = []
    for gc, gk, gg in zip(g_ce, g_kl, g_gram):
        if gc is None:  # adapters: only the Gram term reaches them, unscaled
            expected.append(gg)
            continue
        gt = gc + gk
        if gg is None:  # the classifier: no Gram gradient
            expected.append(gt)
            continue
        nt, ng = (gc if task_norm == "ce" else gt).norm().item(), gg.norm().item()
        e = epoch - 1  # finished epochs
        if rule == "sskd":
            f = min(1.0, 1 / (1 + math.exp(-e)) * nt / ng)
        elif rule == "sskd-code":
            f = min(1 / (1 + math.exp(-(e - 2))), nt / ng)
        elif rule == "literal":
            f = 1 / (1 + math.exp(-(nt / ng) + e)) if ng < nt else 1.0
        else:
            f = 1.0
        expected.append(gt + f * gg)
    return losses, params, expected


@pytest.mark.parametrize("task_norm", ["ce", "ce+kl"])
@pytest.mark.parametrize("rule", ["sskd", "sskd-code", "literal", "none"])
def test_backward_applies_the_clipping_rule_per_tensor(rule, task_norm):
    method = student_kd([teacher(1)], gram_weight=50.0, clip=rule, task_norm=task_norm)
    losses, params, expected = manual_expectation(method, rule, epoch=3, task_norm=task_norm)
    method.backward(losses, lambda t: t, epoch=3)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-5)  # "none" sums in one pass
    if rule == "sskd":  # with a heavy Gram term the rule does bite somewhere
        plain = [gt for gt in expected]
        summed = student_kd([teacher(1)], gram_weight=50.0, clip="none")
        losses, params, unclipped = manual_expectation(summed, "none", epoch=3)
        assert any(not torch.allclose(a, b) for a, b in zip(plain, unclipped))


def test_teachers_stay_frozen_through_a_training_step():
    teachers = [teacher(1), teacher(2)]
    before = [{k: v.clone() for k, v in t.state_dict().items()} for t in teachers]
    method = student_kd(teachers)
    method.train()
    assert all(not t.training for t in teachers)  # train() on the method does not reach them
    trained = {id(p) for p in method.parameters()}
    assert not any(id(p) in trained for t in teachers for p in t.parameters())
    opt = torch.optim.SGD(method.parameters(), lr=0.5)
    x, y = batch()
    losses, _ = method.forward_train(x, y)
    method.backward(losses, lambda t: t, epoch=1)
    opt.step()
    for t, old in zip(teachers, before):
        assert all(p.grad is None and not p.requires_grad for p in t.parameters())
        for k, v in t.state_dict().items():
            torch.testing.assert_close(v, old[k])  # weights and BN statistics unchanged
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in method.student.parameters())


def test_teacher_renormalises_input_to_its_own_statistics():
    other = SimpleNamespace(num_classes=5, shape=(3, 12, 12), mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    torch.manual_seed(1)
    net = build_model("resnet14", 5, 3, subnets=[], widths=[4, 8, 8]).eval()
    t = Teacher(Individual({"resnet14": net}), "resnet14", SPEC, other)
    raw = torch.rand(2, 3, 12, 12)
    as_student = (raw - torch.tensor(SPEC.mean).view(1, 3, 1, 1)) / torch.tensor(SPEC.std).view(1, 3, 1, 1)
    as_teacher = (raw - torch.tensor(other.mean).view(1, 3, 1, 1)) / torch.tensor(other.std).view(1, 3, 1, 1)
    torch.testing.assert_close(t(as_student)[0], net(as_teacher), rtol=1e-4, atol=1e-5)


def test_teacher_with_another_number_of_feature_points_is_refused():
    from ddnn.errors import DdnnError

    torch.manual_seed(0)
    mobilenet = build_model("mobilenet9", 5, 3, subnets=[], widths=[4, 4, 8, 8])  # stem + 4 stages: 5 points
    t = Teacher(Individual({"mobilenet9": mobilenet}), "mobilenet9", SPEC, SPEC)
    with pytest.raises(DdnnError, match="has 5 feature points but the student resnet8 has 4"):
        student_kd([t])
