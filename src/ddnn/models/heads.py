"""Private classifiers: every sub-net gets its own copy of the head's last linear layer.

With a shared classifier the full net and every sub-net must map their (different) final features
through one set of weights; a private one (option `model.head: private`, 650 parameters per extra
net for 10 classes at width 64) removes that constraint. An extracted sub-net is unchanged in size.
"""

import copy

from torch import nn

from ddnn.errors import DdnnError
from ddnn.models.dynamic import DynamicNet
from ddnn.models.norm import Keyed, KeyedSequential


class PrivateLayer(Keyed):
    """One copy of a layer per sub-net (the same initial weights); `bind` shares, `to_static` copies."""

    def __init__(self, layer: nn.Module, keys: list[str]) -> None:
        super().__init__()
        self.layers = nn.ModuleDict({k: copy.deepcopy(layer) for k in keys})

    def bind(self, key: str) -> nn.Module:
        return self.layers[key]

    def to_static(self, key: str) -> nn.Module:
        return copy.deepcopy(self.layers[key])


def private_head(net: DynamicNet) -> DynamicNet:
    """`net` with the last linear layer of its head replaced by one private copy per sub-net."""
    head = net.head
    if not isinstance(head, nn.Sequential) or not any(isinstance(m, nn.Linear) for m in head):
        raise DdnnError(f"model.head=private needs a head ending in a linear layer; {net.family} has none")
    last = max(i for i, m in enumerate(head) if isinstance(m, nn.Linear))
    layers = list(head)
    layers[last] = PrivateLayer(layers[last], list(net.subnets))
    net.head = KeyedSequential(*layers)
    net._plans.clear()
    return net
