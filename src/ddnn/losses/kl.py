"""Temperature-scaled KL distillation (Hinton et al.)."""

import torch
import torch.nn.functional as F

# batchmean: the per-sample KL (a sum over classes) averaged over the batch, the formula of the papers;
# mean: averaged over batch x classes, 1/C of batchmean: F.kl_div's default reduction in the PyTorch
# 0.4 the online-distillation authors' code ran on (docs/departures.md)
KL_REDUCTIONS = ("batchmean", "mean")


def kl_distill(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0,
               reduction: str = "batchmean") -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch (or over batch x classes).

    The T^2 factor keeps the gradient scale independent of T. Computed in fp32 so bf16 autocast
    does not round the small differences between posteriors away.
    """
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"unknown KL reduction {reduction!r}; choose one of {KL_REDUCTIONS}")
    t = temperature
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (t * t)
    # written out rather than F.kl_div's "mean", which warns that it will become "batchmean"
    return kl / teacher_logits.shape[1] if reduction == "mean" else kl
