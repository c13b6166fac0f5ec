"""Cross-layer Gram (FSP) matrices and their distillation loss (docs/methods.md, offline KD).

G_ij = sum_{s,t} F1[s,t,i] * F2[s,t,j] / (h*w) for two feature maps of one net; when their
resolutions differ the larger map is max-pooled to the smaller first. Cross-k pairs (P_a, P_{a+k})
over the feature points P_0..P_L; the loss is normalised by the sum of m*n over pairs, so its weight
does not depend on the widths.
"""

import torch
import torch.nn.functional as F


def pool_to(feature: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Max-pool `feature` (N, C, H, W) down to `size`: kernel = stride = the factor when it divides
    exactly, else adaptive max-pooling."""
    h, w = feature.shape[-2:]
    if (h, w) == tuple(size):
        return feature
    if h % size[0] == 0 and w % size[1] == 0 and h // size[0] == w // size[1]:
        return F.max_pool2d(feature, h // size[0])
    return F.adaptive_max_pool2d(feature, size)


def gram_matrix(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """(N, m, n) Gram matrices of two maps (N, m, h, w) and (N, n, h', w'), in fp32."""
    h = min(first.shape[-2], second.shape[-2])
    w = min(first.shape[-1], second.shape[-1])
    a = pool_to(first, (h, w)).float().flatten(2)
    b = pool_to(second, (h, w)).float().flatten(2)
    with torch.autocast(a.device.type, enabled=False):  # autocast would run bmm in bf16/fp16
        return torch.bmm(a, b.transpose(1, 2)) / (h * w)


def cross_pairs(points: int, cross: int) -> list[tuple[int, int]]:
    """Index pairs (a, a+k), k = 1..cross, over `points` feature points: cross 1 is classic FSP."""
    return [(a, a + k) for k in range(1, cross + 1) for a in range(points - k)]


def gram_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], pairs: list[tuple[int, int]]) -> torch.Tensor:
    """sum over pairs of the batch mean of ||G^T - G^S||_F^2, divided by the sum over pairs of m*n.

    `teacher` holds the teacher's points already mapped to the student's widths; its Grams carry the
    gradient of whatever produced them (the adapters), never of a frozen backbone.
    """
    total, size = 0.0, 0
    for a, b in pairs:
        gs = gram_matrix(student[a], student[b])
        gt = gram_matrix(teacher[a], teacher[b])
        total = total + (gt - gs).pow(2).sum(dim=(1, 2)).mean()
        size += gs.shape[1] * gs.shape[2]
    return total / size
