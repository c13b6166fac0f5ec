"""Pre-trained teachers for offline distillation: loaded from ddnn runs or checkpoints, checked
against the student's data, frozen, and evaluated before training (their accuracy and file hash go
into results.json)."""

from pathlib import Path

import torch
from torch import nn

from ddnn.errors import DdnnError, did_you_mean


class Teacher(nn.Module):
    """A frozen trained net in eval mode. It takes the student's normalised input and re-normalises it
    with the teacher's own statistics (they differ when the teacher saw other training images)."""

    def __init__(self, method: nn.Module, net: str, student_spec, teacher_spec) -> None:
        super().__init__()
        self.method = method.eval().requires_grad_(False)
        self.net = net
        view = (1, -1, 1, 1)
        s_mean, s_std = torch.tensor(student_spec.mean), torch.tensor(student_spec.std)
        t_mean, t_std = torch.tensor(teacher_spec.mean), torch.tensor(teacher_spec.std)
        self.same_input = bool(torch.equal(s_mean, t_mean) and torch.equal(s_std, t_std))
        self.register_buffer("scale", (s_std / t_std).view(view))
        self.register_buffer("shift", ((s_mean - t_mean) / t_std).view(view))
        self.eval()

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)  # a teacher never leaves eval mode (its BN statistics stay)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and feature points of the teacher net, without gradient."""
        if not self.same_input:
            x = x * self.scale.to(x.dtype) + self.shift.to(x.dtype)
        return self.method.feature_points(x, self.net)


def checkpoint_path(ref: str, which: str) -> Path:
    """The checkpoint a teacher reference names: a run folder's `which`.pt, or a checkpoint file."""
    from ddnn.deploy.run import checkpoint_of

    path = Path(ref).expanduser()
    if not path.exists():
        raise DdnnError(f"teacher {ref} does not exist; give a ddnn run folder or a checkpoint (.pt) of one")
    return checkpoint_of(path, which) if path.is_dir() else path


def load_teacher(ref: str, kd, student_spec) -> tuple[Teacher, dict]:
    """A frozen Teacher and its description; a teacher that cannot teach this student is refused
    with a one-line DdnnError (missing, corrupt, not ddnn, other classes or input, other model)."""
    from ddnn.config import saved_config
    from ddnn.engine.checkpoint import sha256_of
    from ddnn.engine.evaluation_cli import load_method
    from ddnn.engine.setup import InputSpec
    from ddnn.methods.base import Method

    path = checkpoint_path(ref, kd.which)
    try:
        method, ckpt = load_method(path)
    except DdnnError as err:
        raise DdnnError(f"teacher {ref}: {err}") from None
    cfg, spec = saved_config(ckpt["config"]), InputSpec.from_dict(ckpt["input"])
    if spec.num_classes != student_spec.num_classes:
        raise DdnnError(f"teacher {ref} predicts {spec.num_classes} classes but the student's data has "
                        f"{student_spec.num_classes}; distil only from a teacher trained on the same classes")
    if tuple(spec.shape) != tuple(student_spec.shape):
        raise DdnnError(f"teacher {ref} was trained on {list(spec.shape)} inputs but the student's data is "
                        f"{list(student_spec.shape)}; use a teacher trained on the same kind of images")
    nets = method.nets()
    net = kd.teacher_net or next(iter(nets))
    if net not in nets:
        raise DdnnError(f"teacher {ref} has no net '{net}'{did_you_mean(net, nets)} (method.kd.teacher_net); "
                        f"its nets: {', '.join(nets)}")
    if kd.teacher_model and kd.teacher_model not in (net, cfg.model.name):
        raise DdnnError(f"teacher {ref} is a {net} ({cfg.model.name} run), not the {kd.teacher_model} that "
                        "method.kd.teacher_model asks for; give a matching teacher or change that key")
    if type(method).feature_points is Method.feature_points:
        raise DdnnError(f"teacher {ref} is a '{cfg.method.name}' run, whose nets give no feature points; "
                        "use a run of ekd, ddnn, individual or kd as teacher")
    info = {"path": str(ref), "checkpoint": str(path), "sha256": sha256_of(path), "model": cfg.model.name,
            "net": net, "method": cfg.method.name, "epoch": ckpt.get("epoch")}
    return Teacher(method, net, student_spec, spec), info
