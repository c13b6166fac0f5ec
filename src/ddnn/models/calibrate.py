"""BatchNorm calibration: re-estimate each net's BN statistics from training batches.

With `model.bn=shared` every sub-net runs through the same BN layers, whose running statistics are a
blend over sub-nets and fit none of them exactly; the per-sub-net mean and variance of the features
it actually produces fix that at no training cost. With private BN it refreshes statistics that lag
fast-moving weights (BN's exponential average), e.g. after a short run at a high learning rate.
"""

from collections.abc import Iterable
from typing import Protocol

import torch
from torch import nn

from ddnn.models.norm import PrivateNorm, SharedNorm

Statistics = dict[str, dict[str, torch.Tensor]]  # norm module path -> {"mean", "var"}


class Nets(Protocol):
    """What calibration needs of the module that holds the nets (a training method): its modules,
    its nets by name and a way to run one of them."""

    training: bool

    def named_modules(self): ...
    def get_submodule(self, target: str) -> nn.Module: ...
    def nets(self) -> dict: ...
    def predict(self, x: torch.Tensor, name: str) -> torch.Tensor: ...
    def eval(self): ...
    def train(self, mode: bool = True): ...


def _batchnorm_of(norm: nn.Module, key: str) -> nn.modules.batchnorm._BatchNorm | None:
    """The BN layer that net `key` runs at this keyed-norm position (None if it never runs it)."""
    if isinstance(norm, SharedNorm):
        return norm.norm
    if isinstance(norm, PrivateNorm):
        return norm.norms[key] if key in norm.norms else None
    return None


@torch.no_grad()
def estimate_statistics(method: Nets, name: str, images: Iterable[torch.Tensor]) -> Statistics:
    """Net `name`'s exact average of per-batch BN statistics over `images`; the method is unchanged.

    Every BN of the net is reset, switched to a cumulative average (momentum None) and run in
    train mode on the batches while everything else stays in eval mode; the originals are restored.
    """
    norms = {path: m for path, m in method.named_modules() if isinstance(m, (PrivateNorm, SharedNorm))}
    layers = {path: bn for path, m in norms.items() if (bn := _batchnorm_of(m, name)) is not None}
    saved = {path: (bn.momentum, {k: v.clone() for k, v in bn.state_dict().items()}) for path, bn in layers.items()}
    was_training = method.training
    method.eval()
    try:
        for path, bn in layers.items():
            bn.reset_running_stats()
            bn.momentum = None
            norms[path].train()
        for x in images:
            method.predict(x, name)
        return {path: {"mean": bn.running_mean.clone(), "var": bn.running_var.clone()}
                for path, bn in layers.items() if int(bn.num_batches_tracked) > 0}
    finally:
        for path, bn in layers.items():
            bn.momentum, state = saved[path]
            bn.load_state_dict(state)
        method.train(was_training)


def apply_statistics(method: Nets, name: str, stats: Statistics) -> None:
    """Install net `name`'s calibrated statistics (as estimated above or read from a checkpoint)."""
    for path, s in stats.items():
        method.get_submodule(path).set_statistics(name, s["mean"], s["var"])


def calibrate(method: Nets, images_per_net, nets: Iterable[str] | None = None) -> dict[str, Statistics]:
    """Estimate and install statistics for every net; `images_per_net()` yields a fresh batch stream."""
    result = {}
    for name in nets or method.nets():
        result[name] = estimate_statistics(method, name, images_per_net())
        apply_statistics(method, name, result[name])
    return result
