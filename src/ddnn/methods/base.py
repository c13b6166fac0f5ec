"""What every training method is: a module that owns its nets and turns a batch into named losses."""

from collections.abc import Callable

import torch
from torch import nn

from ddnn.models import ModelBuilder, SubNet

# Builds the configured DDNN (called with no argument) or a standalone net of one depth (a SubNet).
ModelFactory = ModelBuilder


class Method(nn.Module):
    """A training objective with one job: given a batch, return the named loss terms and the
    logits of every net it trains. The trainer sums the terms, steps, and logs each by name."""

    def forward_train(self, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        raise NotImplementedError

    def nets(self) -> dict[str, SubNet]:
        """Every net this method trains and reports, by name (full net first)."""
        raise NotImplementedError

    def predict(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """Logits of one net, for evaluation."""
        raise NotImplementedError

    def extract(self, name: str) -> nn.Module:
        """One net as a plain standalone module (what gets profiled and deployed)."""
        raise NotImplementedError

    def feature_points(self, x: torch.Tensor, name: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and feature points P_0..P_L of one net: what a distilling method reads from a teacher."""
        raise NotImplementedError

    # -- optional hooks of the training loop (the defaults are plain training) ------------------
    def prepare_training(self, cfg, data, spec, runtime, log: Callable[[str], None]) -> None:
        """Called once by the trainer before the run folder exists (bad input then leaves nothing
        behind) and before the optimizer is built (so modules added here are trained)."""

    def backward(self, losses: dict[str, torch.Tensor], scale: Callable[[torch.Tensor], torch.Tensor],
                 epoch: int) -> None:
        """Fill the parameters' .grad from the batch's loss terms; `scale` is the AMP gradient scaler's."""
        scale(sum(losses.values())).backward()

    def extra_results(self) -> dict:
        """Entries this method adds to results.json (e.g. the teachers it learnt from)."""
        return {}
