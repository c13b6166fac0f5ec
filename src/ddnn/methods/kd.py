"""Offline distillation from an ensemble of pre-trained teachers with cross-layer Gram matrices
(Chou et al. 2021; docs/methods.md):

    L = CE(z_S) + kl_weight * (1/K) sum_k KL_T(z_k || z_S) + lambda * (1/K) sum_k L_gram,k

Teachers are loaded by the engine and handed in (`attach`); they are frozen and live outside the
module tree (not trained, not saved). The 1x1 conv + BN adapters that map a teacher point to the
student's width are trained with the student, saved in the checkpoint, and never part of the
extracted student. The Gram-loss gradient is clipped per parameter tensor (`method.kd.clip`) against
the CE gradient, as the paper's eq. (14) and the code it follows (`method.kd.task_norm=ce+kl`:
against CE + KL, ddnn before issue 19).
"""

import torch
import torch.nn.functional as F
from torch import nn

from ddnn.config import KDConfig
from ddnn.errors import DdnnError
from ddnn.losses import combine_gradients, cross_pairs, gram_loss, kl_distill
from ddnn.methods.base import Method, ModelFactory
from ddnn.methods.teachers import Teacher
from ddnn.models import DynamicNet, SubNet
from ddnn.registry import METHODS

GRAM = "gram."
CE = "ce."


def adapter(cin: int, cout: int) -> nn.Sequential:
    """1x1 conv + BN mapping a teacher feature of `cin` channels to the student's `cout`."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


class OfflineKD(Method):
    distils_from_teachers = True

    def __init__(self, student: DynamicNet, kd: KDConfig) -> None:
        super().__init__()
        self.student = student
        self.kd = kd
        self.adapters = nn.ModuleDict()  # "t<k>_p<i>": teacher k's point i -> the student's width
        self.__dict__["_teachers"] = []  # frozen teachers, outside the module tree
        self.pairs: list[tuple[int, int]] = []

    @property
    def name(self) -> str:
        return self.student.full.name

    def nets(self) -> dict[str, SubNet]:
        return {self.name: self.student.full}

    def locate(self, name: str) -> tuple[DynamicNet, str | None]:
        return self.student, None

    # -- teachers --------------------------------------------------------------------------
    def attach(self, teachers: list[Teacher]) -> list[str]:
        """Use `teachers`: check their feature points against the student's and build the adapters.
        Called before the optimizer is made, so the adapters are trained. Returns lines for the log."""
        s_points = self.student.feature_info
        n = len(s_points)
        if self.kd.gram_weight and self.kd.cross > n - 1:
            raise DdnnError(f"method.kd.cross={self.kd.cross} needs {self.kd.cross + 1} feature points but the "
                            f"student {self.name} has {n}; use method.kd.cross <= {n - 1}")
        self.pairs = cross_pairs(n, self.kd.cross)
        self.adapters = nn.ModuleDict()
        for k, teacher in enumerate(teachers):
            t_points = teacher.feature_info
            if len(t_points) != n:
                raise DdnnError(f"teacher {k + 1} ({teacher.net}) has {len(t_points)} feature points but the student "
                                f"{self.name} has {n}; distil between nets with the same number of stages")
            for i, (t, s) in enumerate(zip(t_points, s_points)):
                if t.channels != s.channels and self.kd.gram_weight:
                    if self.kd.adapters == "off":
                        raise DdnnError(f"teacher {k + 1} has {t.channels} channels at point {i}, the student "
                                        f"{s.channels}; set method.kd.adapters=auto to map them with a 1x1 conv")
                    self.adapters[f"t{k}_p{i}"] = adapter(t.channels, s.channels)
        self.__dict__["_teachers"] = list(teachers)
        return [f"adapters (train-only, 1x1 conv + BN): {', '.join(self.adapters)}"] if self.adapters else []

    def extra_results(self, top1=None, input_shape=None) -> dict:
        return {"teachers": [t.info for t in self._teachers],
                "kd": {"pairs": [list(p) for p in self.pairs], "adapters": list(self.adapters)}}

    # -- training --------------------------------------------------------------------------
    def forward_train(self, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        teachers = self._teachers
        if not teachers:
            raise DdnnError("method kd has no teachers loaded; train it with `ddnn train` (method.kd.teachers)")
        kd, name = self.kd, self.name
        logits, s_points = self.student.forward_intermediates(x)
        losses = {f"{CE}{name}": F.cross_entropy(logits, y)}
        kl, gram = 0.0, 0.0
        for k, teacher in enumerate(teachers):
            t_logits, t_points = teacher(x)
            if kd.kl_weight:
                kl = kl + kl_distill(t_logits, logits, kd.temperature)
            if kd.gram_weight:
                mapped = [self.adapters[f"t{k}_p{i}"](p) if f"t{k}_p{i}" in self.adapters else p
                          for i, p in enumerate(t_points)]
                gram = gram + gram_loss(s_points, mapped, self.pairs)
        if kd.kl_weight:
            losses[f"kl.{name}"] = kd.kl_weight * kl / len(teachers)
        if kd.gram_weight:
            losses[f"{GRAM}{name}"] = kd.gram_weight * gram / len(teachers)
        return losses, {name: logits}

    def backward(self, losses, scale, epoch: int) -> None:
        """CE + KL gradient plus the Gram-loss gradient clipped per tensor (`method.kd.clip`) against
        the norm of the CE gradient (`task_norm=ce`) or of CE + KL (`ce+kl`); `epoch` counts from 1,
        the clipping rules see the finished epochs (epoch - 1). With `ce` and a KL term this takes a
        third backward pass (CE, KL and Gram gradients apart)."""
        distill = [v for k, v in losses.items() if k.startswith(GRAM)]
        if self.kd.clip == "none" or not distill:
            return super().backward(losses, scale, epoch)
        params = [p for p in self.parameters() if p.requires_grad]

        def grads(terms: list[torch.Tensor], last: bool = False) -> list[torch.Tensor | None]:
            return list(torch.autograd.grad(scale(sum(terms)), params, retain_graph=not last, allow_unused=True))

        task = [v for k, v in losses.items() if not k.startswith(GRAM)]
        rest: list[torch.Tensor] = []  # task terms outside the clipping norm (the KL, with task_norm=ce)
        if self.kd.task_norm == "ce":
            rest = [v for k, v in losses.items() if not k.startswith((GRAM, CE))]
            task = [v for k, v in losses.items() if k.startswith(CE)]
        g_rest = grads(rest) if rest else [None] * len(params)
        g_task, g_dist = grads(task), grads(distill, last=True)
        combined = combine_gradients(g_task, g_dist, self.kd.clip, epoch - 1)
        for p, g, extra in zip(params, combined, g_rest):
            for part in (g, extra):
                if part is not None:
                    p.grad = part if p.grad is None else p.grad + part

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Without teachers (evaluating or deploying a kd run) the train-only adapters are not built:
        their saved weights are skipped."""
        if not len(self.adapters):
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("adapters.")}
        return super().load_state_dict(state_dict, strict, assign)


@METHODS.register("kd", help="offline KD from pre-trained teachers: KL + cross-layer Gram matrices, clipped")
def build_kd(cfg, make_model: ModelFactory) -> OfflineKD:
    if not cfg.kd.teachers:
        raise DdnnError("method kd needs at least one teacher: set method.kd.teachers=[RUN_DIR or CKPT, ...]")
    if len(make_model.subnets) > 1:
        raise DdnnError("method kd trains one student net: set model.subnets=[] (the student is model.name)")
    return OfflineKD(make_model(), cfg.kd)
