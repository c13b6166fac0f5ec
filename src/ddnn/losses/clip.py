"""Clipping the distillation gradient against the task gradient, per parameter tensor (docs/methods.md, offline KD).

With tau = ||g_task|| / ||g_dist|| per tensor and e the number of finished epochs (0 during the first),
the distillation gradient is multiplied by:
- `sskd` (default): min(1, sigmoid(e) * tau);
- `sskd-code`: min(sigmoid(e - 2), tau), the rule of the code the paper follows (SSKD_SVD's train.py:
  its distillation gradient times sigmoid(e - 2), clipped by norm to ||g_task||); it differs from
  `sskd` where sigmoid(e - 2) < 1 and tau > sigmoid(e - 2), mostly in the first ~5 epochs;
- `literal`: the paper's eqs. (12)-(14) as printed: beta = 1 / (1 + exp(-tau + e)) when
  ||g_dist|| < ||g_task||, 1 otherwise;
- `none`: 1.
A tensor with no task gradient (an adapter, which only the distillation loss reaches) keeps its
distillation gradient unscaled.
"""

import math

import torch

CLIP_RULES = ("sskd", "sskd-code", "literal", "none")


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def distill_factor(task_norm: float, dist_norm: float, rule: str, epoch: int) -> float:
    """The factor the distillation gradient of one tensor is multiplied by."""
    if rule == "none" or dist_norm == 0 or task_norm == 0:
        return 1.0
    ratio = task_norm / dist_norm
    if rule == "sskd":
        return min(1.0, _sigmoid(epoch) * ratio)
    if rule == "sskd-code":
        return min(_sigmoid(epoch - 2), ratio)
    if rule == "literal":
        return _sigmoid(ratio - epoch) if dist_norm < task_norm else 1.0
    raise ValueError(f"unknown clipping rule {rule!r}; choose one of {CLIP_RULES}")


def combine_gradients(
    task: list[torch.Tensor | None], distill: list[torch.Tensor | None], rule: str, epoch: int
) -> list[torch.Tensor | None]:
    """Per tensor: the task gradient plus the distillation gradient scaled by `distill_factor`."""
    out: list[torch.Tensor | None] = []
    for gt, gd in zip(task, distill):
        if gd is None:
            out.append(gt)
        elif gt is None:
            out.append(gd)
        else:
            f = distill_factor(gt.float().norm().item(), gd.float().norm().item(), rule, epoch)
            out.append(gt + f * gd)
    return out
