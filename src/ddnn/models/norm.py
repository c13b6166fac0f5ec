"""Keyed layers: layers whose behaviour depends on which sub-net runs them (private BatchNorm).

A keyed layer takes `forward(x, key)` where `key` is the running sub-net's name, and can turn itself
into an ordinary layer for one key (`to_static`), which is how a sub-net is extracted.
"""

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ddnn.errors import DdnnError


class Keyed(nn.Module):
    """Marker base: forward(x, key) and to_static(key) -> a plain nn.Module."""

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

    def forward(self, x: torch.Tensor, key: str) -> torch.Tensor:
        return self._pick(key)(x)

    def to_static(self, key: str) -> nn.Module:
        return copy.deepcopy(self._pick(key))


class SharedNorm(Keyed):
    """One normalisation layer for every sub-net (option `bn: shared`)."""

    def __init__(self, make: Callable[[], nn.Module], keys: Sequence[str] = ()) -> None:
        super().__init__()
        self.norm = make()

    def forward(self, x: torch.Tensor, key: str) -> torch.Tensor:
        return self.norm(x)

    def to_static(self, key: str) -> nn.Module:
        return copy.deepcopy(self.norm)


NORMS = {"private": PrivateNorm, "shared": SharedNorm}


def keyed_norm(kind: str, make: Callable[[], nn.Module], keys: Sequence[str]) -> Keyed:
    """A private or shared norm for the sub-nets `keys` that run this position."""
    return NORMS[kind](make, keys)


class KeyedSequential(nn.Sequential, Keyed):
    """nn.Sequential that hands the sub-net key to the keyed layers inside it."""

    def forward(self, x: torch.Tensor, key: str) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, key) if isinstance(layer, Keyed) else layer(x)
        return x

    def to_static(self, key: str) -> nn.Sequential:
        return nn.Sequential(
            *(layer.to_static(key) if isinstance(layer, Keyed) else copy.deepcopy(layer) for layer in self)
        )
