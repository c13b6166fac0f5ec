"""Self-attention distillation on same-resolution feature maps (METHODS.md section 1).

Two kinds of attention map A and distance D:
- `zsum`: A = channel sum of F, standardised per sample over H*W; D = mean squared error.
- `at` (Zagoruyko & Komodakis): A = channel mean of F^2, flattened and L2-normalised per sample;
  D = batch mean of the squared L2 distance.
"""

import torch
import torch.nn.functional as F

EPS = 1e-6


def zsum_map(feature: torch.Tensor) -> torch.Tensor:
    """Channel-summed map, standardised per sample: (N, H*W), zero mean and unit std per row."""
    a = feature.float().sum(dim=1).flatten(1)
    return (a - a.mean(dim=1, keepdim=True)) / (a.std(dim=1, unbiased=False, keepdim=True) + EPS)


def zsum_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(zsum_map(student), zsum_map(teacher))


def at_map(feature: torch.Tensor) -> torch.Tensor:
    """Channel mean of the squared activations, flattened and L2-normalised per sample: (N, H*W)."""
    return F.normalize(feature.float().pow(2).mean(dim=1).flatten(1), dim=1, eps=EPS)


def at_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return (at_map(student) - at_map(teacher)).pow(2).sum(dim=1).mean()


ATTENTION = {"zsum": zsum_distance, "at": at_distance}


def attention_distance(student: torch.Tensor, teacher: torch.Tensor, kind: str = "zsum") -> torch.Tensor:
    """D(A(student), A(teacher)) for one pair of same-resolution feature maps."""
    return ATTENTION[kind](student, teacher)
