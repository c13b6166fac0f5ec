"""Loss terms against values computed by hand (math / numpy, no torch.nn.functional)."""

import math

import numpy as np
import pytest
import torch

from ddnn.losses import ATTENTION, attention_distance, kl_distill
from ddnn.losses.attention import at_distance, at_map, zsum_distance, zsum_map

TEACHER = [[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]]
STUDENT = [[0.5, 1.0, 1.5], [2.0, -0.5, 0.0]]


def _softmax(row, T):
    z = [v / T for v in row]
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]


def _kl_by_hand(teacher, student, T):
    total = 0.0
    for t, s in zip(teacher, student):
        p, q = _softmax(t, T), _softmax(s, T)
        total += sum(pk * (math.log(pk) - math.log(qk)) for pk, qk in zip(p, q))
    return T * T * total / len(teacher)


# --------------------------------------------------------------------------------------------- KL


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 0.5])
def test_kl_matches_hand_value(T):
    got = kl_distill(torch.tensor(TEACHER), torch.tensor(STUDENT), T)
    assert got.shape == ()
    assert got.item() == pytest.approx(_kl_by_hand(TEACHER, STUDENT, T), rel=1e-5, abs=1e-7)
    assert got.item() > 0


def test_kl_default_temperature_is_one():
    assert kl_distill(torch.tensor(TEACHER), torch.tensor(STUDENT)).item() == pytest.approx(
        _kl_by_hand(TEACHER, STUDENT, 1.0), rel=1e-5
    )


def test_kl_direction_is_teacher_to_student():
    # KL(p || q) is not symmetric: swapping the arguments gives the other direction's hand value
    t, s = torch.tensor(TEACHER), torch.tensor(STUDENT)
    assert kl_distill(s, t, 2.0).item() == pytest.approx(_kl_by_hand(STUDENT, TEACHER, 2.0), rel=1e-5)
    assert abs(_kl_by_hand(STUDENT, TEACHER, 2.0) - _kl_by_hand(TEACHER, STUDENT, 2.0)) > 1e-3


def test_kl_zero_for_identical_logits():
    torch.manual_seed(0)
    x = torch.randn(4, 7)
    for T in (1.0, 3.0):
        assert kl_distill(x, x.clone(), T).item() == pytest.approx(0.0, abs=1e-6)
    # a constant shift per row leaves softmax unchanged, so still zero
    assert kl_distill(x, x + torch.tensor([[1.0], [2.0], [-3.0], [0.5]]), 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kl_t_squared_scaling():
    t, s = torch.tensor(TEACHER), torch.tensor(STUDENT)
    for T in (2.0, 5.0):
        unscaled = kl_distill(t / T, s / T, 1.0)
        assert kl_distill(t, s, T).item() == pytest.approx(T * T * unscaled.item(), rel=1e-5)


def test_kl_is_batch_mean():
    t, s = torch.tensor(TEACHER), torch.tensor(STUDENT)
    per_row = [kl_distill(t[i : i + 1], s[i : i + 1], 2.0).item() for i in range(2)]
    assert kl_distill(t, s, 2.0).item() == pytest.approx(sum(per_row) / 2, rel=1e-5)


def test_kl_gradient_to_student_only_with_detached_teacher():
    T = 2.0
    t = torch.tensor(TEACHER, requires_grad=True)
    s = torch.tensor(STUDENT, requires_grad=True)
    kl_distill(t.detach(), s, T).backward()
    assert t.grad is None
    # d/ds [T^2/B * sum p (log p - log q)] = T * (q - p) / B
    p = np.array([_softmax(row, T) for row in TEACHER])
    q = np.array([_softmax(row, T) for row in STUDENT])
    np.testing.assert_allclose(s.grad.numpy(), T * (q - p) / 2, rtol=1e-5, atol=1e-7)

    # without detaching, the teacher receives gradient as well
    t2 = torch.tensor(TEACHER, requires_grad=True)
    s2 = torch.tensor(STUDENT, requires_grad=True)
    kl_distill(t2, s2, T).backward()
    assert t2.grad is not None and t2.grad.abs().sum() > 0
    np.testing.assert_allclose(s2.grad.numpy(), s.grad.numpy(), rtol=1e-6)


def test_kl_low_precision_inputs_computed_in_fp32():
    t, s = torch.tensor(TEACHER), torch.tensor(STUDENT)
    got = kl_distill(t.bfloat16(), s.bfloat16(), 2.0)
    assert got.dtype == torch.float32
    # these logits are exact in bf16, so the value is the fp32 one
    assert got.item() == pytest.approx(_kl_by_hand(TEACHER, STUDENT, 2.0), rel=1e-5)


# --------------------------------------------------------------------------------------------- zsum

# N=2, C=2, H=W=2
FEAT_A = [
    [[[1.0, 2.0], [3.0, 4.0]], [[0.5, -1.0], [2.0, 0.0]]],
    [[[0.0, 1.0], [0.0, 2.0]], [[1.0, 1.0], [3.0, -2.0]]],
]
FEAT_B = [
    [[[2.0, 0.0], [1.0, 1.0]], [[1.0, 1.0], [0.0, 3.0]]],
    [[[1.0, 3.0], [2.0, 0.5]], [[-1.0, 0.0], [4.0, 1.0]]],
]


def _zsum_map_by_hand(feat):
    out = []
    for sample in feat:
        a = [sum(sample[c][h][w] for c in range(len(sample))) for h in range(2) for w in range(2)]
        mean = sum(a) / len(a)
        std = math.sqrt(sum((v - mean) ** 2 for v in a) / len(a))  # population std
        out.append([(v - mean) / (std + 1e-6) for v in a])
    return out


def _zsum_distance_by_hand(fs, ft):
    ms, mt = _zsum_map_by_hand(fs), _zsum_map_by_hand(ft)
    diffs = [(a - b) ** 2 for rs, rt in zip(ms, mt) for a, b in zip(rs, rt)]
    return sum(diffs) / len(diffs)


def test_zsum_map_by_hand():
    got = zsum_map(torch.tensor(FEAT_A))
    assert got.shape == (2, 4)
    np.testing.assert_allclose(got.numpy(), np.array(_zsum_map_by_hand(FEAT_A)), rtol=1e-5, atol=1e-6)
    # first sample: channel sums 1.5, 1, 5, 4
    assert _zsum_map_by_hand(FEAT_A)[0][0] == pytest.approx((1.5 - 2.875) / math.sqrt(2.796875), rel=1e-5)


def test_zsum_distance_by_hand():
    got = zsum_distance(torch.tensor(FEAT_A), torch.tensor(FEAT_B))
    assert got.shape == ()
    assert got.item() == pytest.approx(_zsum_distance_by_hand(FEAT_A, FEAT_B), rel=1e-5)
    assert got.item() > 0
    assert zsum_distance(torch.tensor(FEAT_A), torch.tensor(FEAT_A)).item() == pytest.approx(0.0, abs=1e-10)


def test_zsum_invariant_to_positive_per_sample_scale():
    torch.manual_seed(0)
    s, t = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    base = zsum_distance(s, t)
    scale = torch.tensor([0.5, 3.0, 10.0]).view(3, 1, 1, 1)
    assert zsum_distance(s * scale, t).item() == pytest.approx(base.item(), rel=1e-4)
    assert zsum_distance(s, t * scale.flip(0)).item() == pytest.approx(base.item(), rel=1e-4)
    # and to a per-sample additive shift of the channel sum
    assert zsum_distance(s + 2.0, t).item() == pytest.approx(base.item(), rel=1e-4)


# --------------------------------------------------------------------------------------------- at


def _at_map_by_hand(feat):
    out = []
    for sample in feat:
        C = len(sample)
        a = [sum(sample[c][h][w] ** 2 for c in range(C)) / C for h in range(2) for w in range(2)]
        norm = math.sqrt(sum(v * v for v in a))
        out.append([v / norm for v in a])
    return out


def _at_distance_by_hand(fs, ft, reduction="mean"):
    """mean: over N x H*W (the AT paper's scale); sum: summed over H*W, averaged over N."""
    ms, mt = _at_map_by_hand(fs), _at_map_by_hand(ft)
    per_sample = [sum((a - b) ** 2 for a, b in zip(rs, rt)) for rs, rt in zip(ms, mt)]
    return sum(per_sample) / len(per_sample) / (len(ms[0]) if reduction == "mean" else 1)


def test_at_map_by_hand():
    got = at_map(torch.tensor(FEAT_A))
    assert got.shape == (2, 4)
    np.testing.assert_allclose(got.numpy(), np.array(_at_map_by_hand(FEAT_A)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.norm(dim=1).numpy(), [1.0, 1.0], rtol=1e-6)


def test_at_distance_by_hand():
    got = at_distance(torch.tensor(FEAT_A), torch.tensor(FEAT_B))
    assert got.shape == ()
    assert got.item() == pytest.approx(_at_distance_by_hand(FEAT_A, FEAT_B), rel=1e-5)
    assert got.item() > 0
    summed = at_distance(torch.tensor(FEAT_A), torch.tensor(FEAT_B), reduction="sum")
    assert summed.item() == pytest.approx(_at_distance_by_hand(FEAT_A, FEAT_B, "sum"), rel=1e-5)
    assert summed.item() == pytest.approx(4 * got.item(), rel=1e-6)  # H*W = 4


def test_at_distance_identical_is_zero():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 5)
    assert at_distance(x, x.clone()).item() == pytest.approx(0.0, abs=1e-7)
    # sign and per-sample scale do not matter: the map uses F^2 and is normalised
    assert at_distance(x, -3.0 * x).item() == pytest.approx(0.0, abs=1e-6)


def test_at_distance_bounded_by_two_for_nonnegative_maps():
    torch.manual_seed(0)
    for _ in range(5):
        s, t = torch.rand(4, 3, 6, 6), torch.rand(4, 3, 6, 6)
        assert 0.0 <= at_distance(s, t, reduction="sum").item() <= 2.0
    # disjoint supports reach the bound exactly; the mean over H*W = 4 positions is a quarter of it
    s = torch.zeros(2, 2, 2, 2)
    t = torch.zeros(2, 2, 2, 2)
    s[:, :, 0, 0] = 1.0
    t[:, :, 1, 1] = 5.0
    assert at_distance(s, t, reduction="sum").item() == pytest.approx(2.0, rel=1e-6)
    assert at_distance(s, t).item() == pytest.approx(0.5, rel=1e-6)


# --------------------------------------------------------------------------------------------- dispatch


def test_attention_distance_dispatch():
    a, b = torch.tensor(FEAT_A), torch.tensor(FEAT_B)
    assert set(ATTENTION) == {"zsum", "at"}
    assert torch.equal(attention_distance(a, b, kind="zsum"), zsum_distance(a, b))
    assert torch.equal(attention_distance(a, b, kind="at"), at_distance(a, b))
    assert torch.equal(attention_distance(a, b), zsum_distance(a, b))  # zsum is the default
    assert attention_distance(a, b, kind="zsum").item() == pytest.approx(_zsum_distance_by_hand(FEAT_A, FEAT_B), rel=1e-5)
    assert attention_distance(a, b, kind="at").item() == pytest.approx(_at_distance_by_hand(FEAT_A, FEAT_B), rel=1e-5)
    assert attention_distance(a, b, "zsum").item() != pytest.approx(attention_distance(a, b, "at").item())


def test_channel_sum_equals_sum_and_keeps_the_gradient_dense():
    """The 1x1-conv channel sum is the plain channel sum, and its gradient is a dense tensor in the
    feature's own (channels_last) layout, not a channel-broadcast view."""
    from ddnn.losses.attention import channel_sum

    torch.manual_seed(0)
    f = torch.randn(2, 5, 3, 4).contiguous(memory_format=torch.channels_last).requires_grad_()
    got = channel_sum(f)
    torch.testing.assert_close(got, f.detach().sum(1).flatten(1), atol=1e-6, rtol=1e-6)
    weights = torch.randn(2, 12)
    (got * weights).sum().backward()
    torch.testing.assert_close(f.grad, weights.view(2, 1, 3, 4).expand(2, 5, 3, 4))
    assert f.grad.is_contiguous(memory_format=torch.channels_last) and f.grad.stride(1) == 1
