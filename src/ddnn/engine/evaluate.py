"""Top-1 accuracy of every net a method trains, in eval mode and fp32."""

import torch

from ddnn.data import Normalizer, Split, batches
from ddnn.engine.distributed import World
from ddnn.engine.runtime import Runtime
from ddnn.methods import Method


@torch.no_grad()
def evaluate(method: Method, split: Split, normalize: Normalizer, runtime: Runtime, batch_size: int,
             world: World | None = None) -> dict[str, float]:
    """{net name: top-1 in percent} on `split`; fp32 so reported numbers do not depend on AMP.

    With a `world` of several processes each one counts its own contiguous share of `split` and the
    counts are summed, so every process returns the top-1 over the whole split."""
    was_training = method.training
    method.eval()
    names = list(method.nets())
    correct = torch.zeros(len(names), dtype=torch.float64, device=runtime.device)
    part = split if world is None or not world.distributed else split.subset(torch.arange(len(split))[world.slice(len(split))])
    for x, y in batches(part, batch_size, normalize):
        x, y = runtime.to_input(x), y.to(runtime.device)
        for i, name in enumerate(names):
            correct[i] += (method.predict(x, name).argmax(1) == y).sum()
    if world is not None:
        world.sum(correct)
    method.train(was_training)
    return {name: 100.0 * c / len(split) for name, c in zip(names, correct.tolist())}
