"""Latency of forward passes: medians and spreads over repeats, two models timed side by side.

The two models (a sub-net inside the DDNN, and its extracted standalone form) are timed in
alternating order within the same loop, so drift of a shared machine hits both alike and their
ratio is meaningful even when absolute times wander.
"""

import statistics
import time
from collections.abc import Callable

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(times_ms: list[float]) -> dict[str, float]:
    """Median and the 10th/90th percentiles (the spread) of a list of times in ms."""
    qs = statistics.quantiles(times_ms, n=10, method="inclusive") if len(times_ms) > 1 else times_ms * 9
    return {"median": statistics.median(times_ms), "p10": qs[0], "p90": qs[-1], "repeats": len(times_ms)}


@torch.no_grad()
def time_pair(first: Forward, second: Forward, x: torch.Tensor, warmup: int, repeats: int,
              context: Callable = torch.no_grad) -> tuple[dict[str, float], dict[str, float]]:
    """Latency summaries (ms) of `first(x)` and `second(x)`, interleaved, after `warmup` runs each."""
    fns = (first, second)
    times: tuple[list[float], list[float]] = ([], [])
    with context():
        for _ in range(warmup):
            for fn in fns:
                fn(x)
        for r in range(repeats):
            for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                _sync(x.device)
                start = time.perf_counter()
                fns[i](x)
                _sync(x.device)
                times[i].append((time.perf_counter() - start) * 1000.0)
    return summarize(times[0]), summarize(times[1])
