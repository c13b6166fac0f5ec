"""A pre-trained teacher as a distilling method sees it: a frozen net that takes the student's input.

The engine loads teachers from ddnn runs or checkpoints, checks them against the student's data and
evaluates them (engine/teachers.py); the method only runs them.
"""

import torch
from torch import nn

from ddnn.models import FeatureInfo


class Teacher(nn.Module):
    """A frozen trained net in eval mode. It takes the student's normalised input and re-normalises it
    with the teacher's own statistics (they differ when the teacher saw other training images).

    `method` is the teacher run's method and `net` the name of the net in it; `info` describes where
    it came from (file, sha256, accuracy) for results.json."""

    def __init__(self, method: nn.Module, net: str, student_spec, teacher_spec, info: dict | None = None) -> None:
        super().__init__()
        self.method = method.eval().requires_grad_(False)
        self.net = net
        self.info = dict(info or {})
        view = (1, -1, 1, 1)
        s_mean, s_std = torch.tensor(student_spec.mean), torch.tensor(student_spec.std)
        t_mean, t_std = torch.tensor(teacher_spec.mean), torch.tensor(teacher_spec.std)
        self.same_input = bool(torch.equal(s_mean, t_mean) and torch.equal(s_std, t_std))
        self.register_buffer("scale", (s_std / t_std).view(view))
        self.register_buffer("shift", ((s_mean - t_mean) / t_std).view(view))
        self.eval()

    @property
    def feature_info(self) -> list[FeatureInfo] | None:
        """The teacher net's feature points (None: its method offers none)."""
        return self.method.feature_info(self.net)

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)  # a teacher never leaves eval mode (its BN statistics stay)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and feature points of the teacher net, without gradient."""
        if not self.same_input:
            x = x * self.scale.to(x.dtype) + self.shift.to(x.dtype)
        return self.method.feature_points(x, self.net)
