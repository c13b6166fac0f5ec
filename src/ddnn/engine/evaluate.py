"""Top-1 accuracy of every net a method trains, in eval mode and fp32."""

import torch

from ddnn.data import Normalizer, Split, batches
from ddnn.engine.runtime import Runtime
from ddnn.methods import Method


@torch.no_grad()
def evaluate(method: Method, split: Split, normalize: Normalizer, runtime: Runtime, batch_size: int) -> dict[str, float]:
    """{net name: top-1 in percent} on `split`; fp32 so reported numbers do not depend on AMP."""
    was_training = method.training
    method.eval()
    correct = {name: 0 for name in method.nets()}
    for x, y in batches(split, batch_size, normalize):
        x, y = runtime.to_input(x), y.to(runtime.device)
        for name in correct:
            correct[name] += (method.predict(x, name).argmax(1) == y).sum().item()
    method.train(was_training)
    return {name: 100.0 * c / len(split) for name, c in correct.items()}
