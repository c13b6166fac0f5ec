"""The depth-switching core: a network of stages whose sub-nets run the first d_s blocks of stage s.

One `DynamicNet` holds the shared weights of every configured sub-net. A `SubNet` is a value
(name + blocks per stage) passed to `forward`; nothing global changes when switching, so switching
costs only the choice of which blocks run. `extract` turns one sub-net into a plain `nn.Sequential`.
"""

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from ddnn.errors import DdnnError
from ddnn.models.norm import Keyed
from ddnn.models.static import Residual


@dataclass(frozen=True)
class SubNet:
    """A depth vector with a name: run the first `blocks[s]` blocks of stage s."""

    name: str
    blocks: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))


class Features(NamedTuple):
    """What `forward(..., features=True)` returns: logits plus the feature points along the net."""

    logits: torch.Tensor
    stem: torch.Tensor
    stages: list[torch.Tensor]


class FeatureInfo(NamedTuple):
    """One feature point P_i (timm's `feature_info`): where it is, its channels, and how many times
    smaller than the input its maps are. Every sub-net has the same points (a stage's first block,
    which changes width and resolution, always runs)."""

    name: str  # "stem" or "stage<s>" (s from 0, as `method.stages` counts)
    channels: int
    reduction: int


def feature_info(stem: tuple[int, int] | None, stages: Sequence[tuple[int, int]]) -> list[FeatureInfo]:
    """The feature points of a family's net from its (channels, reduction) after the stem (None: an
    empty stem, whose output would be the image itself) and after each stage."""
    points = [FeatureInfo("stem", *stem)] if stem is not None else []
    return points + [FeatureInfo(f"stage{s}", c, r) for s, (c, r) in enumerate(stages)]


class ResidualBlock(Keyed):
    """relu(body(x) + shortcut(x)) with keyed (per-sub-net) normalisation inside; it runs as the
    plain `Residual` that `bind` (shared layers) or `to_static` (copies) makes for one sub-net."""

    def __init__(self, body: Keyed, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def bind(self, key: str) -> nn.Module:
        if self.shortcut is None:
            shortcut: nn.Module = nn.Identity()
        else:
            shortcut = self.shortcut.bind(key) if isinstance(self.shortcut, Keyed) else self.shortcut
        return Residual(self.body.bind(key), shortcut)

    def to_static(self, key: str) -> nn.Module:
        if self.shortcut is None:
            shortcut: nn.Module = nn.Identity()
        elif isinstance(self.shortcut, Keyed):
            shortcut = self.shortcut.to_static(key)
        else:
            shortcut = copy.deepcopy(self.shortcut)
        return Residual(self.body.to_static(key), shortcut)


class DynamicNet(nn.Module):
    """stem -> stages of blocks -> head, where a sub-net runs a prefix of each stage.

    `subnets[0]` is the full net (every block). Block i of stage s only needs normalisation for
    the sub-nets that run it, which the family builders arrange.
    """

    def __init__(
        self,
        stem: Keyed,
        stages: Sequence[Sequence[Keyed]],
        head: nn.Module,
        subnets: Sequence[SubNet],
        family: str,
        features: Sequence[FeatureInfo],
    ) -> None:
        """`features`: the feature points the builder made (see `feature_info`)."""
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(nn.ModuleList(blocks) for blocks in stages)
        self.head = head
        self.family = family
        self.max_blocks = tuple(len(blocks) for blocks in stages)
        self.subnets = {s.name: s for s in subnets}
        if len(self.subnets) != len(subnets):
            raise DdnnError(f"sub-net names must be unique, got {[s.name for s in subnets]}")
        self.full = subnets[0]
        self.feature_info = list(features)
        if len(self.feature_info) != len(stages) + (len(list(stem.children())) > 0):
            raise DdnnError(f"{family}: {len(self.feature_info)} feature points described for a stem and "
                            f"{len(stages)} stages")
        if self.full.blocks != self.max_blocks:
            raise DdnnError(f"the first sub-net must be the full net {self.max_blocks}, got {self.full.blocks}")
        for s in subnets:
            self.check(s)
        # plans: per sub-net, a plain nn.Sequential over this net's layers (not registered as a
        # submodule, so it adds nothing to parameters() or the state dict)
        self.__dict__["_plans"] = {}

    def check(self, subnet: SubNet) -> SubNet:
        """Validate a depth vector against this net: one entry per stage, 1 <= d_s <= N_s."""
        if len(subnet.blocks) != len(self.max_blocks) or not all(
            1 <= d <= n for d, n in zip(subnet.blocks, self.max_blocks)
        ):
            raise DdnnError(
                f"sub-net '{subnet.name}' has blocks {list(subnet.blocks)}, impossible for a net with "
                f"{list(self.max_blocks)} blocks per stage; give one depth per stage, each 1..N_s"
            )
        return subnet

    def resolve(self, subnet: SubNet | str | None) -> SubNet:
        """A SubNet from a name (a configured sub-net), a SubNet, or None (the full net)."""
        if subnet is None:
            return self.full
        if isinstance(subnet, str):
            if subnet not in self.subnets:
                raise DdnnError(f"unknown sub-net '{subnet}'; this net has: {', '.join(self.subnets)}")
            return self.subnets[subnet]
        return self.check(subnet)

    def _plan(self, net: SubNet) -> nn.Sequential:
        """The sub-net as a plain nn.Sequential over the shared layers, built once per sub-net."""
        plan = self._plans.get(net)
        if plan is None:
            layers = [self.stem.bind(net.name)]
            for depth, blocks in zip(net.blocks, self.stages):
                layers.extend(block.bind(net.name) for block in blocks[:depth])
            layers.append(self.head.bind(net.name) if isinstance(self.head, Keyed) else self.head)
            plan = self._plans[net] = nn.Sequential(*layers)
        return plan

    def plan(self, subnet: SubNet | str | None = None) -> nn.Sequential:
        """The sub-net as the plain nn.Sequential `forward` runs, sharing this net's layers (unlike
        `extract`): what lets one exported file hold every depth with each shared layer once."""
        return self._plan(self.resolve(subnet))

    def users(self) -> dict[int, int]:
        """id(parameter) -> how many configured sub-nets run it (a parameter no sub-net runs is absent)."""
        counts: dict[int, int] = {}
        for sub in self.subnets.values():
            for param in self._plan(sub).parameters():
                counts[id(param)] = counts.get(id(param), 0) + 1
        return counts

    def _apply(self, fn, recurse=True):
        self._plans.clear()  # device/dtype moves may replace tensors; plans are rebuilt on demand
        return super()._apply(fn, recurse)

    def forward(
        self, x: torch.Tensor, subnet: SubNet | str | None = None, features: bool = False
    ) -> torch.Tensor | Features:
        """Logits of a sub-net (default: the full net), or with `features` also the stem's and every
        stage's output. It runs the sub-net's plan, so inside the DDNN a sub-net costs what its
        extracted form costs."""
        net = self.resolve(subnet)
        plan = self._plan(net)
        if not features:
            return plan(x)
        stem = x = plan[0](x)
        outs, i = [], 1
        for depth in net.blocks:
            for j in range(i, i + depth):
                x = plan[j](x)
            outs.append(x)
            i += depth
        return Features(plan[i](x), stem, outs)

    def feature_points(self, out: Features) -> list[torch.Tensor]:
        """The points P_0..P_L that feature distillation matches: the stem's output (unless the stem is
        empty, as VGG's, when it would be the input itself) and every stage's output."""
        return ([out.stem] if len(self.feature_info) > len(out.stages) else []) + list(out.stages)

    def forward_intermediates(self, x: torch.Tensor, subnet: SubNet | str | None = None
                              ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the feature points P_0..P_L (as `feature_info` describes them) of one sub-net."""
        out = self(x, subnet, features=True)
        return out.logits, self.feature_points(out)

    def extract(self, subnet: SubNet | str | None = None) -> nn.Sequential:
        """A plain nn.Sequential (torch.nn + `Residual`) computing exactly this sub-net."""
        net = self.resolve(subnet)
        key = net.name
        layers: list[nn.Module] = [self.stem.to_static(key)]
        for depth, blocks in zip(net.blocks, self.stages):
            layers.extend(block.to_static(key) for block in blocks[:depth])
        layers.append(self.head.to_static(key) if isinstance(self.head, Keyed) else copy.deepcopy(self.head))
        static = nn.Sequential(*layers)
        static.train(self.training)
        return static
