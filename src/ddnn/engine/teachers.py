"""Pre-trained teachers for offline distillation, loaded from ddnn runs or checkpoints: checked
against the student's data, frozen, and evaluated before training (their accuracy and file hash go
into results.json). The method gets them ready to use (`Method.attach`)."""

from pathlib import Path

import torch

from ddnn.checkpoint import sha256_of
from ddnn.config import KDConfig, saved_config
from ddnn.data import Dataset, InputSpec, Normalizer
from ddnn.engine.evaluate import evaluate
from ddnn.engine.evaluation import load_method
from ddnn.engine.run_folder import check_belongs, checkpoint_of
from ddnn.engine.runtime import Runtime
from ddnn.errors import DdnnError, did_you_mean
from ddnn.methods import Method
from ddnn.methods.teachers import Teacher
from ddnn.models import SubNet


def checkpoint_path(ref: str, which: str) -> Path:
    """The checkpoint a teacher reference names: a run folder's `which`.pt, or a checkpoint file."""
    path = Path(ref).expanduser()
    if not path.exists():
        raise DdnnError(f"teacher {ref} does not exist; give a ddnn run folder or a checkpoint (.pt) of one")
    return checkpoint_of(path, which) if path.is_dir() else path


def load_teacher(ref: str, kd: KDConfig, student_spec: InputSpec) -> Teacher:
    """A frozen Teacher with its description; a teacher that cannot teach this student is refused
    with a one-line DdnnError (missing, corrupt, not ddnn, other classes or input, other model)."""
    path = checkpoint_path(ref, kd.which)
    try:
        method, ckpt = load_method(path)
        if Path(ref).expanduser().is_dir():  # a run folder: its checkpoint must be its own
            check_belongs(Path(ref).expanduser(), ckpt, path)
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
    if method.feature_info(net) is None:
        raise DdnnError(f"teacher {ref} is a '{cfg.method.name}' run, whose nets give no feature points; "
                        "use a run of ekd, ddnn, individual or kd as teacher")
    info = {"path": str(ref), "checkpoint": str(path), "sha256": sha256_of(path), "model": cfg.model.name,
            "net": net, "method": cfg.method.name, "epoch": ckpt.get("epoch")}
    return Teacher(method, net, student_spec, spec, info)


class _TeacherAsMethod(Method):
    """A teacher seen as a one-net method, so the standard evaluation loop measures it."""

    def __init__(self, teacher: Teacher) -> None:
        super().__init__()
        self.__dict__["teacher"] = teacher

    def nets(self) -> dict[str, SubNet]:
        return {"teacher": SubNet("teacher", ())}

    def predict(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return self.teacher(x)[0]


def load_teachers(kd: KDConfig, spec: InputSpec) -> list[Teacher]:
    """Every teacher of `method.kd.teachers`, loaded and checked against the student's data."""
    return [load_teacher(ref, kd, spec) for ref in kd.teachers]


def evaluate_teachers(teachers: list[Teacher], data: Dataset, spec: InputSpec, runtime: Runtime, batch_size: int,
                      log) -> None:
    """Each teacher on the run's device, evaluated on the validation split (test when there is none);
    the accuracy joins its `info`."""
    split_name = "val" if data.val is not None else "test"
    split = data.val if data.val is not None else data.test
    for k, teacher in enumerate(teachers):
        runtime.prepare(teacher)
        # the student's normalisation followed by the teacher's re-normalisation is the teacher's own
        top1 = evaluate(_TeacherAsMethod(teacher), split, Normalizer(spec.mean, spec.std), runtime,
                        batch_size)["teacher"]
        teacher.info[f"{split_name}_top1"] = top1
        info = teacher.info
        log(f"teacher {k + 1}/{len(teachers)}: {info['net']} from {info['checkpoint']} "
            f"({split_name} top-1 {top1:.2f} %, sha256 {info['sha256'][:12]})")
