"""Online distillation (docs/methods.md): m students learn together with a teacher built on them.

The students are independently initialised copies of the configured net (usually its cheap-conv
form, `model.cheap`); the teacher has no backbone of its own: it concatenates the students'
last-stage feature maps, then BN, ReLU, global average pooling and a new classifier. There is no
pre-trained teacher and nothing is detached, so teacher and students learn from each other:

    L = CE(z_t) + sum_j [ CE(z_j) + T^2 * KL(softmax_T(z_t) || softmax_T(z_j)) ]

The KL is averaged over the batch (`kl_reduction=batchmean`, the formula) or over batch x classes
(`mean`, 1/C of it: what the authors' code computes, docs/departures.md).

After training the student with the best validation top-1 is the run's deployable net.
"""

import copy
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ddnn.config import OnlineConfig
from ddnn.errors import DdnnError
from ddnn.losses import kl_distill
from ddnn.methods.base import Method, ModelFactory
from ddnn.models import DynamicNet, FeatureInfo, SubNet
from ddnn.models.cost import net_cost
from ddnn.registry import METHODS

TEACHER = "teacher"


class TeacherHead(nn.Sequential):
    """concat(students' last-stage maps) -> BN -> ReLU -> global average pool -> linear."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__(nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(channels, num_classes))


class Ensemble(nn.Module):
    """The teacher as a plain module: each student's body (its net without the classifier) on the
    same input, their feature maps concatenated, then the teacher head."""

    def __init__(self, bodies: list[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.bodies = nn.ModuleList(bodies)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([body(x) for body in self.bodies], dim=1))


def online_loss(teacher: torch.Tensor, students: list[torch.Tensor], y: torch.Tensor,
                temperature: float, kl_reduction: str = "batchmean") -> dict[str, torch.Tensor]:
    """The named terms of L: ce.teacher, and per student j ce.student<j> and kl.student<j>
    (T^2 * KL(softmax_T(z_t) || softmax_T(z_j)), batch mean or batch x class mean); no term is detached."""
    losses = {f"ce.{TEACHER}": F.cross_entropy(teacher, y)}
    for j, z in enumerate(students):
        losses[f"ce.student{j}"] = F.cross_entropy(z, y)
        losses[f"kl.student{j}"] = kl_distill(teacher, z, temperature, kl_reduction)
    return losses


def best_student(top1: dict[str, float], students: list[str]) -> str:
    """The student with the highest top-1 in `top1` (the first one on a tie)."""
    return max(students, key=lambda name: (top1[name], -students.index(name)))


class OnlineDistillation(Method):
    def __init__(self, students: list[DynamicNet], num_classes: int, cfg: OnlineConfig,
                 standard: DynamicNet | None = None) -> None:
        """`students`: the m nets (cfg.students of them, built by `build_online`); `standard`: the
        standard-convolution form of one, for cost reports only."""
        super().__init__()
        if len(students) < 2:
            raise DdnnError(f"online distillation needs at least 2 students, got {len(students)}")
        self.students = nn.ModuleList(students)
        self.names = [net.full.name for net in students]
        width = students[0].feature_info[-1].channels  # the last stage's output
        self.head = TeacherHead(width * len(students), num_classes)
        self.temperature, self.kl_reduction = cfg.temperature, cfg.kl_reduction
        self.__dict__["standard"] = standard  # the standard-conv net, for cost reports only (not trained)

    def nets(self) -> dict[str, SubNet]:
        nets = {net.full.name: net.full for net in self.students}
        nets[TEACHER] = SubNet(TEACHER, self.students[0].full.blocks)
        return nets

    def locate(self, name: str) -> tuple[DynamicNet, str | None]:
        """A student (the teacher is no DynamicNet: `predict` and `extract` build it)."""
        return self.students[self.names.index(name)], None

    def feature_info(self, name: str) -> list[FeatureInfo] | None:
        """None: an online run is not offered as a kd teacher (its own teacher has no feature points)."""
        return None

    def _teacher_logits(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat(features, dim=1))

    def forward_train(self, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        outs = [net(x, features=True) for net in self.students]
        teacher = self._teacher_logits([o.stages[-1] for o in outs])
        logits = {name: o.logits for name, o in zip(self.names, outs)}
        logits[TEACHER] = teacher
        return online_loss(teacher, [o.logits for o in outs], y, self.temperature, self.kl_reduction), logits

    def predict(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if name == TEACHER:
            return self._teacher_logits([net(x, features=True).stages[-1] for net in self.students])
        return super().predict(x, name)

    def extract(self, name: str) -> nn.Module:
        if name == TEACHER:
            return Ensemble([net.extract()[:-1] for net in self.students], copy.deepcopy(self.head)).train(self.training)
        return super().extract(name)

    def default_net(self, val_top1: Callable[[], dict[str, float]]) -> str:
        """The best student by validation top-1: what the run deploys when no net is named."""
        return best_student(val_top1(), self.names)

    def extra_results(self, top1: dict[str, dict[str, float] | None], input_shape: tuple[int, ...]) -> dict:
        """Best-of-m for the final weights and for best.pt (chosen on val, or on test without a val
        split), the mean over students, the teacher, and the standard-conv net's costs beside a student's."""
        summary = {"best_student": self._best(top1["top1"], top1["val_top1"]),
                   "best_student_of_best_pt": self._best(top1["best_top1"], top1["best_val_top1"])}
        accs = [top1["top1"][n] for n in self.names]
        summary["students"] = {"names": list(self.names), "mean_top1": statistics.fmean(accs),
                               "std_top1": statistics.stdev(accs), "min_top1": min(accs), "max_top1": max(accs)}
        summary["teacher_top1"] = top1["top1"][TEACHER]
        if self.standard is not None:
            summary["standard_net"] = net_cost(self.standard.extract(), input_shape)
            summary["student_net"] = net_cost(self.students[0].extract(), input_shape)
        return summary

    def _best(self, test: dict[str, float], val: dict[str, float] | None) -> dict:
        name = best_student(val if val is not None else test, self.names)
        return {"name": name, "top1": test[name], "val_top1": None if val is None else val[name],
                "selected_on": "test" if val is None else "val"}


@METHODS.register("online", help="m cheap students + a teacher built on their features, learning together")
def build_online(cfg, make_model: ModelFactory) -> OnlineDistillation:
    if len(make_model.subnets) > 1:
        raise DdnnError("method online trains m copies of one net, not a DDNN: set model.subnets=[] "
                        f"(got {[s.name for s in make_model.subnets[1:]]})")
    full = make_model.subnets[0].blocks
    students = [make_model(SubNet(f"student{j}", full)) for j in range(cfg.online.students)]
    standard = make_model(SubNet("standard", full), standard=True) if make_model.cheap else None
    return OnlineDistillation(students, make_model.num_classes, cfg.online, standard)
