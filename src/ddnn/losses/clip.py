"""Clipping the distillation gradient against the task gradient, per parameter tensor (docs/methods.md, offline KD).

`sskd` (default): g = g_task + min(1, sigmoid(e) * ||g_task|| / ||g_dist||) * g_dist.
`literal`: the paper's eqs. (12)-(14) as printed: tau = ||g_task|| / ||g_dist||,
beta = 1 / (1 + exp(-tau + e)); the distillation gradient is multiplied by beta when
||g_dist|| < ||g_task|| and kept as it is otherwise.
`none`: g = g_task + g_dist.
`e` is the number of finished epochs (0 during the first). A tensor with no task gradient (an adapter,
which only the distillation loss reaches) keeps its distillation gradient unscaled.
"""

import math

import torch

CLIP_RULES = ("sskd", "literal", "none")


def distill_factor(task_norm: float, dist_norm: float, rule: str, epoch: int) -> float:
    """The factor the distillation gradient of one tensor is multiplied by."""
    if rule == "none" or dist_norm == 0 or task_norm == 0:
        return 1.0
    ratio = task_norm / dist_norm
    if rule == "sskd":
        return min(1.0, 1.0 / (1.0 + math.exp(-epoch)) * ratio)
    if rule == "literal":
        return 1.0 / (1.0 + math.exp(-ratio + epoch)) if dist_norm < task_norm else 1.0
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
