"""The baseline a DDNN must beat: each configured depth trained alone as its own network.

All nets see the same batches, but share no weights; summing their CE losses under one SGD
optimizer is the same as training each alone (SGD's update of a parameter uses only its own grad).
"""

import torch
import torch.nn.functional as F
from torch import nn

from ddnn.methods.base import Method, ModelFactory
from ddnn.models import DynamicNet, SubNet
from ddnn.registry import METHODS


class Individual(Method):
    def __init__(self, nets: dict[str, DynamicNet]) -> None:
        super().__init__()
        self.models = nn.ModuleDict(nets)

    def nets(self) -> dict[str, SubNet]:
        return {name: net.full for name, net in self.models.items()}

    def locate(self, name: str) -> tuple[DynamicNet, str | None]:
        return self.models[name], None

    def forward_train(self, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        logits = {name: net(x) for name, net in self.models.items()}
        return {f"ce.{name}": F.cross_entropy(z, y) for name, z in logits.items()}, logits


@METHODS.register("individual", help="each configured depth trained alone from scratch (the baseline)")
def build_individual(cfg, make_model: ModelFactory) -> Individual:
    return Individual({sub.name: make_model(sub) for sub in make_model.subnets})
