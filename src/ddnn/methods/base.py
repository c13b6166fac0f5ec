"""What every training method is: a module that owns its nets and turns a batch into named losses."""

from collections.abc import Callable

import torch
from torch import nn

from ddnn.models import DynamicNet, FeatureInfo, ModelBuilder, SubNet
from ddnn.models.cost import net_cost

# Builds the configured DDNN (called with no argument) or a standalone net of one depth (a SubNet).
ModelFactory = ModelBuilder


class Method(nn.Module):
    """A training objective with one job: given a batch, return the named loss terms and the
    logits of every net it trains. The trainer sums the terms, steps, and logs each by name."""

    # Epochs of training done before the current step, fractional (2.5 = half-way through epoch 3).
    # The trainer sets it before every step, so schedules inside a method (a distillation warm-up)
    # follow the run and resume exactly without state of their own.
    progress: float = 0.0
    # False when a step may leave some parameters without a gradient (DDP must then look for them).
    uses_every_parameter: bool = True
    # True for a method that distils from pre-trained teachers: the engine loads them (method.kd.*)
    # and hands them to `attach` before the optimizer is made.
    distils_from_teachers: bool = False

    def forward_train(self, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The training step's forward, so DistributedDataParallel (which wraps `forward`) can run it."""
        return self.forward_train(x, y)

    def nets(self) -> dict[str, SubNet]:
        """Every net this method trains and reports, by name (full net first)."""
        raise NotImplementedError

    def locate(self, name: str) -> tuple[DynamicNet, str | None]:
        """The DynamicNet that runs net `name`, and the sub-net to run in it (None: its full net)."""
        raise NotImplementedError

    # -- one net, wherever it lives ------------------------------------------------------------
    def predict(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """Logits of one net, for evaluation."""
        net, sub = self.locate(name)
        return net(x, sub)

    def extract(self, name: str) -> nn.Module:
        """One net as a plain standalone module (what gets profiled and deployed)."""
        net, sub = self.locate(name)
        return net.extract(sub)

    def feature_points(self, x: torch.Tensor, name: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and feature points P_0..P_L of one net: what a distilling method reads from a teacher."""
        net, sub = self.locate(name)
        return net.forward_intermediates(x, sub)

    def feature_info(self, name: str) -> list[FeatureInfo] | None:
        """What `feature_points` gives for net `name` (None: this method offers no feature points)."""
        return self.locate(name)[0].feature_info

    def net_costs(self, input_shape: tuple[int, ...]) -> dict[str, dict]:
        """Blocks, parameters and MACs of every net, counted on its extracted standalone form."""
        return {name: {"blocks": list(sub.blocks), **net_cost(self.extract(name), input_shape)}
                for name, sub in self.nets().items()}

    # -- optional hooks of the training loop (the defaults are plain training) ------------------
    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """The optimizer's parameter groups (a method may give some weights another decay)."""
        return [{"params": list(self.parameters()), "weight_decay": weight_decay}]

    def attach(self, teachers: list) -> list[str]:
        """Take the engine's frozen teachers (methods/teachers.Teacher), for `distils_from_teachers`
        methods; called before the run folder exists and before the optimizer is built. Returns
        lines for the run's log."""
        raise NotImplementedError(f"{type(self).__name__} does not distil from teachers")

    def backward(self, losses: dict[str, torch.Tensor], scale: Callable[[torch.Tensor], torch.Tensor],
                 epoch: int) -> None:
        """Fill the parameters' .grad from the batch's loss terms (single process); `scale` is the AMP
        gradient scaler's, `epoch` counts from 1."""
        scale(sum(losses.values())).backward()

    def default_net(self, val_top1: Callable[[], dict[str, float]]) -> str | None:
        """The net to deploy when none is named (`ddnn export --run DIR`), or None when the method
        has no single answer. `val_top1()` evaluates every net on the validation split, on demand."""
        return None

    def extra_results(self, top1: dict[str, dict[str, float] | None], input_shape: tuple[int, ...]) -> dict:
        """Method-specific entries for results.json. `top1` holds top-1 per net of the final weights
        ("top1": test, "val_top1") and of best.pt ("best_top1", "best_val_top1"); the val entries are
        None without a validation split. `input_shape` (C, H, W) is for cost counts."""
        return {}
