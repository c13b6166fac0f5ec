"""Temperature-scaled KL distillation (Hinton et al.)."""

import torch
import torch.nn.functional as F


def kl_distill(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch.

    The T^2 factor keeps the gradient scale independent of T. Computed in fp32 so bf16 autocast
    does not round the small differences between posteriors away.
    """
    t = temperature
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (t * t)
