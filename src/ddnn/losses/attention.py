"""Self-attention distillation on same-resolution feature maps (docs/methods.md, EKD).

Two kinds of attention map A and distance D:
- `zsum`: A = channel sum of F, standardised per sample over H*W; D = mean squared error.
- `at` (Zagoruyko & Komodakis): A = channel mean of F^2, flattened and L2-normalised per sample;
  D = batch mean of the squared L2 distance.

Maps and distances are separate so a teacher's maps are computed once per batch, not once per
student.
"""

import torch
import torch.nn.functional as F

EPS = 1e-6


def channel_sum(feature: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H*W) in fp32: the sum over channels, as a 1x1 convolution with unit weights.

    Not `feature.float().sum(1)`: that copies the feature to fp32, and its gradient is a
    channel-broadcast view whose addition into the feature's channels_last gradient sent the backward
    of the block below onto slow paths (most of EKD's 16 % overhead over CE-only training;
    benchmarks/RESULTS.md). A convolution's gradient is a dense tensor in the feature's own layout,
    and it accumulates in fp32 under bf16 autocast.
    """
    ones = feature.new_ones(1, feature.shape[1], 1, 1)
    return F.conv2d(feature, ones).flatten(1).float()


def zsum_map(feature: torch.Tensor) -> torch.Tensor:
    """Channel-summed map, standardised per sample: (N, H*W), zero mean and unit std per row."""
    centred = channel_sum(feature)
    centred = centred - centred.mean(dim=1, keepdim=True)
    # the population std written out: aten::std and its backward cost 1.5x these few element-wise ops
    return centred / (centred.pow(2).mean(dim=1, keepdim=True).sqrt() + EPS)


def at_map(feature: torch.Tensor) -> torch.Tensor:
    """Channel mean of the squared activations, flattened and L2-normalised per sample: (N, H*W)."""
    return F.normalize(channel_sum(feature * feature) / feature.shape[1], dim=1, eps=EPS)


def zsum_map_distance(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(student_map, teacher_map)


def at_map_distance(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    return (student_map - teacher_map).pow(2).sum(dim=1).mean()


MAPS = {"zsum": zsum_map, "at": at_map}
MAP_DISTANCES = {"zsum": zsum_map_distance, "at": at_map_distance}
ATTENTION = tuple(MAPS)  # the kinds


def attention_map(feature: torch.Tensor, kind: str = "zsum") -> torch.Tensor:
    return MAPS[kind](feature)


def map_distance(student_map: torch.Tensor, teacher_map: torch.Tensor, kind: str = "zsum") -> torch.Tensor:
    return MAP_DISTANCES[kind](student_map, teacher_map)


def zsum_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return zsum_map_distance(zsum_map(student), zsum_map(teacher))


def at_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return at_map_distance(at_map(student), at_map(teacher))


def attention_distance(student: torch.Tensor, teacher: torch.Tensor, kind: str = "zsum") -> torch.Tensor:
    """D(A(student), A(teacher)) for one pair of same-resolution feature maps."""
    return map_distance(attention_map(student, kind), attention_map(teacher, kind), kind)
