"""The offline-KD loss pieces against hand-computed values: Gram (FSP) matrices with pooling and
the m*n normalisation, cross-k pairs, KL with temperature, and the distillation-gradient clipping."""

import math

import pytest
import torch

from ddnn.losses import combine_gradients, cross_pairs, distill_factor, gram_loss, gram_matrix, kl_distill, pool_to


def fmap(*channels):
    """One sample (1, C, H, W) from nested lists, one per channel."""
    return torch.tensor([channels], dtype=torch.float32)


def test_gram_matrix_by_hand():
    f1 = fmap([[1, 2], [3, 4]], [[0, 1], [1, 0]])  # m = 2 channels
    f2 = fmap([[1, 1], [2, 0]])  # n = 1 channel
    # G_ij = sum_{s,t} F1[s,t,i] F2[s,t,j] / (h w): (1+2+6+0)/4 and (0+1+2+0)/4
    torch.testing.assert_close(gram_matrix(f1, f2), torch.tensor([[[2.25], [0.75]]]))


def test_gram_pools_the_larger_map_to_the_smaller():
    big = torch.arange(16.0).view(1, 1, 4, 4)
    torch.testing.assert_close(pool_to(big, (2, 2)), torch.tensor([[[[5.0, 7.0], [13.0, 15.0]]]]))
    small = fmap([[1, 0], [0, 1]])
    # 2x2 max-pool (kernel = stride = 2): [[5, 7], [13, 15]]; G = (5*1 + 15*1) / 4, either order
    torch.testing.assert_close(gram_matrix(big, small), torch.tensor([[[5.0]]]))
    torch.testing.assert_close(gram_matrix(small, big), torch.tensor([[[5.0]]]))
    # a factor that does not divide falls back to adaptive max-pooling
    assert pool_to(torch.randn(1, 2, 5, 5), (2, 2)).shape == (1, 2, 2, 2)


def test_cross_pairs():
    assert cross_pairs(4, 1) == [(0, 1), (1, 2), (2, 3)]  # classic FSP
    assert cross_pairs(4, 3) == [(0, 1), (1, 2), (2, 3), (0, 2), (1, 3), (0, 3)]
    assert cross_pairs(5, 4)[-1] == (0, 4) and len(cross_pairs(5, 4)) == 10


def test_gram_loss_batch_mean_and_mn_normalisation():
    t1 = torch.cat([fmap([[1, 2], [3, 4]], [[0, 1], [1, 0]]), 2 * fmap([[1, 2], [3, 4]], [[0, 1], [1, 0]])])
    t2 = torch.cat([fmap([[1, 1], [2, 0]]), 2 * fmap([[1, 1], [2, 0]])])
    s1, s2 = torch.zeros_like(t1), torch.zeros_like(t2)
    # sample 1: ||G^T||^2 = 2.25^2 + 0.75^2 = 5.625; sample 2: both maps doubled -> G x4 -> 16 x 5.625
    # batch mean (5.625 + 90) / 2 = 47.8125, divided by m*n = 2*1
    assert gram_loss([s1, s2], [t1, t2], [(0, 1)]).item() == pytest.approx(47.8125 / 2)


def test_gram_loss_sums_pairs_then_divides_by_the_sum_of_mn():
    torch.manual_seed(0)
    s = [torch.randn(3, c, 4, 4) for c in (2, 1, 3)]
    t = [torch.randn(3, c, 4, 4) for c in (2, 1, 3)]
    pairs = [(0, 1), (1, 2)]
    per_pair = [(gram_matrix(t[a], t[b]) - gram_matrix(s[a], s[b])).pow(2).sum((1, 2)).mean() for a, b in pairs]
    torch.testing.assert_close(gram_loss(s, t, pairs), (per_pair[0] + per_pair[1]) / (2 * 1 + 1 * 3))


def test_kl_with_temperature_by_hand():
    teacher = torch.tensor([[0.0, math.log(3.0)]])
    student = torch.tensor([[0.0, 0.0]])
    # T = 1: p_T = (1/4, 3/4), p_S = (1/2, 1/2)
    assert kl_distill(teacher, student, 1.0).item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    # T = 2: p_T = (1, sqrt 3) / (1 + sqrt 3), times T^2 = 4
    a = 1 / (1 + math.sqrt(3))
    expected = 4 * (a * math.log(2 * a) + (1 - a) * math.log(2 * (1 - a)))
    assert kl_distill(teacher, student, 2.0).item() == pytest.approx(expected, rel=1e-5)


def test_clipping_factors_by_hand():
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    # sskd: min(1, sigmoid(e) * ||g_task|| / ||g_dist||)
    assert distill_factor(1.0, 4.0, "sskd", 0) == pytest.approx(0.5 * 0.25)
    assert distill_factor(1.0, 4.0, "sskd", 3) == pytest.approx(sig(3) * 0.25)
    assert distill_factor(4.0, 1.0, "sskd", 0) == 1.0
    # literal, eqs. (12)-(14): scaled by beta = 1/(1+exp(-tau+p)) only when ||g_dist|| < ||g_task||
    assert distill_factor(3.0, 1.0, "literal", 1) == pytest.approx(1 / (1 + math.exp(-3 + 1)))
    assert distill_factor(1.0, 3.0, "literal", 1) == 1.0
    assert distill_factor(1.0, 4.0, "none", 0) == 1.0
    assert distill_factor(0.0, 4.0, "sskd", 0) == 1.0  # no task gradient (an adapter): unscaled


def test_combine_gradients_per_tensor():
    task = [torch.tensor([3.0, 4.0]), None, torch.tensor([1.0])]
    dist = [torch.tensor([0.0, 10.0]), torch.tensor([2.0]), None]
    out = combine_gradients(task, dist, "sskd", 0)
    # tensor 1: ||g_task|| = 5, ||g_dist|| = 10 -> factor min(1, 0.5 * 0.5) = 0.25 -> [3, 4 + 2.5]
    torch.testing.assert_close(out[0], torch.tensor([3.0, 6.5]))
    torch.testing.assert_close(out[1], torch.tensor([2.0]))  # only distillation reaches it
    torch.testing.assert_close(out[2], torch.tensor([1.0]))
    torch.testing.assert_close(combine_gradients(task, dist, "none", 0)[0], torch.tensor([3.0, 14.0]))
