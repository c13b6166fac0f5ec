"""Keyed layers: layers whose behaviour depends on which sub-net runs them (private BatchNorm).

A keyed layer turns itself into an ordinary layer for one sub-net (its name is the key): `bind` shares
the weights (how a DynamicNet runs a sub-net), `to_static` copies them (how a sub-net is extracted).
"""

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ddnn.errors import DdnnError


class Keyed(nn.Module):
    """A layer that differs per sub-net. It is never called directly: `bind(key)` gives the plain
    module sub-net `key` runs (sharing this layer's weights; DynamicNet.forward runs those), and
    `to_static(key)` an independent copy (extraction)."""

    def bind(self, key: str) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_static(self, key: str) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError


class PrivateNorm(Keyed):
    """One normalisation layer (running stats + affine) per sub-net that runs this position.

    Like switchable BN in slimmable networks: removing blocks shifts the statistics later layers
    see, so each sub-net keeps its own; convolutions stay shared.
    """

    def __init__(self, make: Callable[[], nn.Module], keys: Sequence[str]) -> None:
        super().__init__()
        self.norms = nn.ModuleDict({k: make() for k in keys})

    def _pick(self, key: str) -> nn.Module:
        if key not in self.norms:
            raise DdnnError(
                f"sub-net '{key}' has no private BatchNorm here (configured: {', '.join(self.norms)}); "
                "add it to model.subnets and train, or use model.bn=shared with calibration"
            )
        return self.norms[key]

    def bind(self, key: str) -> nn.Module:
        return self._pick(key)

    def to_static(self, key: str) -> nn.Module:
        return copy.deepcopy(self._pick(key))

    def set_statistics(self, key: str, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Replace sub-net `key`'s running statistics (from `ddnn calibrate`)."""
        norm = self._pick(key)
        norm.running_mean.copy_(mean)
        norm.running_var.copy_(var)


class SharedNorm(Keyed):
    """One normalisation layer for every sub-net (option `bn: shared`).

    Its running statistics are a blend over sub-nets; `ddnn calibrate` re-estimates them per sub-net
    and stores them here (`set_statistics`), used in eval mode and by `to_static`. They are
    non-persistent buffers: the checkpoint keeps them apart from the trained state.
    """

    def __init__(self, make: Callable[[], nn.Module], keys: Sequence[str] = ()) -> None:
        super().__init__()
        self.norm = make()
        self.calibrated: set[str] = set()

    def _stats(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"calibrated_mean_{key}"), getattr(self, f"calibrated_var_{key}")

    def forward(self, x: torch.Tensor, key: str) -> torch.Tensor:
        if self.training or key not in self.calibrated:
            return self.norm(x)
        mean, var = self._stats(key)
        return F.batch_norm(x, mean, var, self.norm.weight, self.norm.bias, False, 0.0, self.norm.eps)

    def bind(self, key: str) -> nn.Module:
        return _SharedNormView(self, key)

    def to_static(self, key: str) -> nn.Module:
        norm = copy.deepcopy(self.norm)
        if key in self.calibrated:
            mean, var = self._stats(key)
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
        return norm

    def set_statistics(self, key: str, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Give sub-net `key` its own running statistics (from `ddnn calibrate`)."""
        ref = self.norm.running_mean
        self.register_buffer(f"calibrated_mean_{key}", mean.detach().to(ref), persistent=False)
        self.register_buffer(f"calibrated_var_{key}", var.detach().to(ref), persistent=False)
        self.calibrated.add(key)


class _SharedNormView(nn.Module):
    """A shared norm seen by one sub-net (its calibrated statistics are looked up at call time)."""

    def __init__(self, shared: SharedNorm, key: str) -> None:
        super().__init__()
        self.shared, self.key = shared, key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(x, self.key)


NORMS = {"private": PrivateNorm, "shared": SharedNorm}


def keyed_norm(kind: str, make: Callable[[], nn.Module], keys: Sequence[str]) -> Keyed:
    """A private or shared norm for the sub-nets `keys` that run this position."""
    return NORMS[kind](make, keys)


class KeyedSequential(nn.Sequential, Keyed):
    """A sequence of layers, some keyed; it runs as the plain nn.Sequential `bind(key)` makes."""

    def bind(self, key: str) -> nn.Sequential:
        return nn.Sequential(*(layer.bind(key) if isinstance(layer, Keyed) else layer for layer in self))

    def to_static(self, key: str) -> nn.Sequential:
        return nn.Sequential(
            *(layer.to_static(key) if isinstance(layer, Keyed) else copy.deepcopy(layer) for layer in self)
        )
