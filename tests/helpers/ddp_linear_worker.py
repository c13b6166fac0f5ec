"""Run by tests/test_distributed.py under torchrun: trains a BatchNorm-free method, so a run on several
processes must reproduce a one-process run up to float rounding (BatchNorm is the one thing DDP changes)."""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ddnn.config import load_config
from ddnn.engine.trainer import Trainer
from ddnn.methods import Method
from ddnn.models import SubNet
from ddnn.registry import METHODS


class LinearProbe(Method):
    def __init__(self, in_features: int, classes: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, 32), nn.ReLU(), nn.Linear(32, classes))

    def nets(self):
        return {"probe": SubNet("probe", (1,))}

    def forward_train(self, x, y):
        z = self.net(x)
        return {"ce.probe": F.cross_entropy(z, y), "l2.probe": 1e-3 * z.pow(2).mean()}, {"probe": z}

    def predict(self, x, name):
        return self.net(x)

    def extract(self, name):
        return self.net


@METHODS.register("linear_probe", help="test only")
def build(cfg, make_model):
    return LinearProbe(3 * 16 * 16, 4)


if __name__ == "__main__":
    out, *overrides = sys.argv[1:]
    Trainer(load_config(None, overrides), Path(out), log=lambda *_: None).fit()
