"""Self-attention distillation on same-resolution feature maps (docs/methods.md, EKD).

Two kinds of attention map A and distance D:
- `zsum`: A = channel sum of F, standardised per sample over H*W; D = mean squared error.
- `at` (Zagoruyko & Komodakis): A = channel mean of F^2, flattened and L2-normalised per sample;
  D = the squared difference averaged over N x H*W, as in the AT paper and its code, so that their
  beta = 1000 means the same here (`sum`: summed over H*W and averaged over N, H*W times larger,
  ddnn before issue 19).

Maps are computed in fp32 from whatever precision the features have: under bf16 autocast a
channel sum left to autocast comes back rounded to bf16.

Maps and distances are separate so a teacher's maps are computed once per batch, not once per
student.
"""

import torch
import torch.nn.functional as F

EPS = 1e-6


class _ChannelSum(torch.autograd.Function):
    """sum over channels of F (or of F^2), accumulated and returned in fp32 whatever F's precision.

    Neither `F.conv2d(F, ones)` under autocast (its map comes back rounded to bf16) nor
    `F.float().sum(1)` (an fp32 copy of every feature, and a channel-broadcast gradient whose addition
    into the feature's channels_last gradient sent the backward of the block below onto slow paths:
    most of EKD's 16 % overhead over CE-only training, benchmarks/RESULTS.md). The gradient is written
    once, dense, in F's own dtype and memory format.
    """

    @staticmethod
    def forward(ctx, feature: torch.Tensor, square: bool) -> torch.Tensor:
        ctx.square, ctx.shape, ctx.dtype = square, feature.shape, feature.dtype
        ctx.layout = torch.channels_last if feature.is_contiguous(memory_format=torch.channels_last) \
            else torch.contiguous_format
        ctx.save_for_backward(feature if square else None)
        with torch.autocast(feature.device.type, enabled=False):
            x = feature.float().square() if square else feature
            return x.sum(1, dtype=torch.float32).flatten(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        n, c, h, w = ctx.shape
        g = grad.view(n, 1, h, w)
        if ctx.square:
            g = 2.0 * ctx.saved_tensors[0].float() * g
        out = torch.empty((n, c, h, w), dtype=ctx.dtype, device=grad.device, memory_format=ctx.layout)
        return out.copy_(g.expand(n, c, h, w)), None


def channel_sum(feature: torch.Tensor, square: bool = False) -> torch.Tensor:
    """(N, C, H, W) -> (N, H*W) in fp32: the sum over channels of the feature (or of its square)."""
    return _ChannelSum.apply(feature, square)


def zsum_map(feature: torch.Tensor) -> torch.Tensor:
    """Channel-summed map, standardised per sample: (N, H*W), zero mean and unit std per row."""
    centred = channel_sum(feature)
    centred = centred - centred.mean(dim=1, keepdim=True)
    # the population std written out: aten::std and its backward cost 1.5x these few element-wise ops
    return centred / (centred.pow(2).mean(dim=1, keepdim=True).sqrt() + EPS)


def at_map(feature: torch.Tensor) -> torch.Tensor:
    """Channel mean of the squared activations (squared in fp32), flattened and L2-normalised per
    sample: (N, H*W)."""
    return F.normalize(channel_sum(feature, square=True) / feature.shape[1], dim=1, eps=EPS)


def zsum_map_distance(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(student_map, teacher_map)


AT_REDUCTIONS = ("mean", "sum")


def at_map_distance(student_map: torch.Tensor, teacher_map: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """`mean`: over N x H*W (the AT paper's scale); `sum`: summed over H*W, averaged over N."""
    squared = (student_map - teacher_map).pow(2)
    if reduction == "mean":
        return squared.mean()
    if reduction == "sum":
        return squared.sum(dim=1).mean()
    raise ValueError(f"unknown at reduction {reduction!r}; choose one of {AT_REDUCTIONS}")


MAPS = {"zsum": zsum_map, "at": at_map}
ATTENTION = tuple(MAPS)  # the kinds


def attention_map(feature: torch.Tensor, kind: str = "zsum") -> torch.Tensor:
    return MAPS[kind](feature)


def map_distance(student_map: torch.Tensor, teacher_map: torch.Tensor, kind: str = "zsum",
                 at_reduction: str = "mean") -> torch.Tensor:
    if kind == "at":
        return at_map_distance(student_map, teacher_map, at_reduction)
    if kind == "zsum":
        return zsum_map_distance(student_map, teacher_map)
    raise ValueError(f"unknown attention kind {kind!r}; choose one of {ATTENTION}")


def zsum_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return zsum_map_distance(zsum_map(student), zsum_map(teacher))


def at_distance(student: torch.Tensor, teacher: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    return at_map_distance(at_map(student), at_map(teacher), reduction)


def attention_distance(student: torch.Tensor, teacher: torch.Tensor, kind: str = "zsum",
                       at_reduction: str = "mean") -> torch.Tensor:
    """D(A(student), A(teacher)) for one pair of same-resolution feature maps."""
    return map_distance(attention_map(student, kind), attention_map(teacher, kind), kind, at_reduction)
