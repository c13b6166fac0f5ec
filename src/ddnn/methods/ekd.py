"""DDNN training: the full net and every configured sub-net in one shared weight set.

`ekd` adds Embedded Knowledge Distillation, where the full net teaches each sub-net in every
iteration: KL on posteriors by default, plus attention on stage features in `ekd-paper` (the paper's
terms, which cost accuracy where measured: docs/methods.md). `ddnn` is the same net with CE only.
All three read their options from the method section of the config (config/schema.py: the defaults
and the `ekd-paper` preset live there, nowhere else).
"""

import dataclasses
import math

import torch
import torch.nn.functional as F

from ddnn.config import MethodConfig
from ddnn.errors import DdnnError
from ddnn.losses import attention_map, kl_distill, map_distance
from ddnn.methods.base import Method, ModelFactory
from ddnn.models import DynamicNet, SubNet
from ddnn.registry import METHODS


class EmbeddedKD(Method):
    """L = CE(z_f) + sum_m [CE(z_m) + alpha*KL_T(z_f || z_m) + beta*sum_s D(A(F_m^s), A(F_f^s))]
          [+ gamma * KL_T(ensemble || z_f)].

    Options beyond the paper (docs/methods.md has the formulas and the defaults): `distill_warmup` ramps
    alpha and beta linearly from 0 over that many epochs (the full net teaches only once it knows
    something); `ensemble` (gamma) lets the full net learn back from the detached mean posterior of
    all nets; `sample="sandwich"` runs the full net, the smallest sub-net and one random other
    sub-net per step instead of all of them; `teacher="ensemble"` makes that mean posterior, not the
    full net, the sub-nets' KL target.
    """

    def __init__(self, model: DynamicNet, cfg: MethodConfig) -> None:
        """`cfg`: the method section of a config (its EKD fields: alpha, beta, temperature ...)."""
        super().__init__()
        self.model = model
        self.alpha, self.beta, self.temperature = cfg.alpha, cfg.beta, cfg.temperature
        self.attention, self.at_reduction = cfg.attention, cfg.at_reduction
        n_stages = len(model.max_blocks)
        self.stages = list(range(n_stages)) if cfg.stages is None else list(cfg.stages)
        if any(not 0 <= s < n_stages for s in self.stages):
            raise DdnnError(f"method.stages {self.stages} must be stage indices 0..{n_stages - 1}")
        self.detach_teacher = cfg.detach_teacher
        self.sub_ce = cfg.sub_ce  # 0: sub-nets learn from the full net's posteriors only (in-place distillation)
        self.distill_warmup, self.ensemble, self.sample = cfg.distill_warmup, cfg.ensemble, cfg.sample
        self.shared_decay, self.teacher = cfg.shared_decay, cfg.teacher
        self.uses_ensemble = self.ensemble != 0 or (self.teacher == "ensemble" and self.alpha != 0)
        self.uses_every_parameter = self.sample == "all" or len(model.subnets) <= 3
        # "mean" divides every term by the number of nets, so the shared weights get one net's
        # worth of gradient scale instead of M+1 times it. "balanced" divides each parameter's
        # gradient by the number of nets that run it: every weight then moves as in one net's training.
        self.scale = 1.0 / len(model.subnets) if cfg.reduce == "mean" else 1.0
        if cfg.reduce == "balanced":
            self._balance_gradients()

    def nets(self) -> dict[str, SubNet]:
        return dict(self.model.subnets)

    def locate(self, name: str) -> tuple[DynamicNet, str | None]:
        return self.model, name

    def _balance_gradients(self) -> None:
        users = self.model.users()
        for param in self.model.parameters():
            n = users.get(id(param), 1)
            if n > 1:
                param.register_hook(lambda grad, n=n: grad / n)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """With `shared_decay="per_net"`, a weight run by n nets decays n times as fast: the summed
        loss adds one decay term for n nets' losses, so each net alone would see 1/n of its decay."""
        if self.shared_decay == "sum":
            return super().parameter_groups(weight_decay)
        users = self.model.users()
        groups: dict[int, list] = {}
        for param in self.parameters():
            groups.setdefault(users.get(id(param), 1), []).append(param)
        return [{"params": ps, "weight_decay": weight_decay * n} for n, ps in sorted(groups.items())]

    def distill_ramp(self) -> float:
        """The factor on the distillation terms at the current step: 0 -> 1 over `distill_warmup` epochs."""
        return min(1.0, self.progress / self.distill_warmup) if self.distill_warmup > 0 else 1.0

    def students(self) -> list[SubNet]:
        """The sub-nets trained this step: all, or the sandwich (smallest + one random other)."""
        subs = list(self.model.subnets.values())[1:]
        if self.sample == "all" or len(subs) <= 2:
            return subs
        # the global RNG: seeded per run, identical in every process, restored on resume
        return [subs[int(torch.randint(len(subs) - 1, ()))], subs[-1]]

    def forward_train(self, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        ramp = self.distill_ramp()
        alpha, beta = self.alpha * ramp, self.beta * ramp
        want_features = self.beta != 0
        full = self.model.full
        out = self.model(x, full, features=want_features)
        t_logits, t_stages = (out.logits, out.stages) if want_features else (out, [])
        losses = {f"ce.{full.name}": F.cross_entropy(t_logits, y)}
        logits = {full.name: t_logits}
        if self.detach_teacher:
            t_logits = t_logits.detach()
            t_stages = [f.detach() for f in t_stages]
        t_maps = {s: attention_map(t_stages[s], self.attention) for s in self.stages} if want_features else {}
        for sub in self.students():
            out = self.model(x, sub, features=want_features)
            s_logits = out.logits if want_features else out
            logits[sub.name] = s_logits
            if self.sub_ce != 0:
                losses[f"ce.{sub.name}"] = self.sub_ce * F.cross_entropy(s_logits, y)
            if self.beta != 0:
                att = sum(map_distance(attention_map(out.stages[s], self.attention), t_maps[s], self.attention,
                                       self.at_reduction) for s in self.stages)
                losses[f"att.{sub.name}"] = beta * att
        mean = ensemble_logits(list(logits.values()), self.temperature).detach() if self.uses_ensemble else None
        if self.alpha != 0:
            teacher = mean if self.teacher == "ensemble" else t_logits
            for name in list(logits)[1:]:
                losses[f"kl.{name}"] = alpha * kl_distill(teacher, logits[name], self.temperature)
        if self.ensemble != 0:
            losses[f"ens.{full.name}"] = self.ensemble * ramp * kl_distill(mean, logits[full.name], self.temperature)
        if self.scale != 1.0:
            losses = {k: v * self.scale for k, v in losses.items()}
        return losses, logits



def ensemble_logits(logits: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """Logits whose softmax at `temperature` is the mean of the nets' softmaxes at `temperature`."""
    t = temperature
    log_probs = torch.stack([F.log_softmax(z.float() / t, dim=1) for z in logits])
    return t * (torch.logsumexp(log_probs, dim=0) - math.log(len(logits)))


# `ddnn`: the same DDNN and config with every net's CE at weight 1 and no distillation term;
# `reduce`, `sample` and `shared_decay` still apply. The saved config keeps the section as given.
CE_ONLY = {"alpha": 0.0, "beta": 0.0, "ensemble": 0.0, "sub_ce": 1.0, "stages": None}


@METHODS.register("ekd", help="DDNN + Embedded Knowledge Distillation (full net teaches every sub-net)")
def build_ekd(cfg: MethodConfig, make_model: ModelFactory) -> EmbeddedKD:
    return EmbeddedKD(make_model(), cfg)


@METHODS.register("ekd-paper", help="EKD with the paper's literal terms (docs/methods.md), for faithful comparisons")
def build_ekd_paper(cfg: MethodConfig, make_model: ModelFactory) -> EmbeddedKD:
    return EmbeddedKD(make_model(), cfg)


@METHODS.register("ddnn", help="DDNN trained jointly with CE only (EKD with alpha = beta = 0)")
def build_ddnn(cfg: MethodConfig, make_model: ModelFactory) -> EmbeddedKD:
    return EmbeddedKD(make_model(), dataclasses.replace(cfg, **CE_ONLY))
