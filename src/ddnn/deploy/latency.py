"""Latency of forward passes: medians and spreads over repeats, several models timed side by side.

The models (e.g. a sub-net inside the DDNN and its extracted standalone form) are timed in turn
within the same loop, so drift of a shared machine hits all alike and their ratios are meaningful
even when absolute times wander.
"""

import contextlib
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
def time_interleaved(fns: list[Forward], x: torch.Tensor, warmup: int, repeats: int,
                     context: Callable = contextlib.nullcontext) -> list[dict[str, float]]:
    """Latency summaries (ms) of each `fn(x)`, timed in turn (order rotating every repeat) after
    `warmup` untimed runs each, inside `context()` (e.g. autocast)."""
    times: list[list[float]] = [[] for _ in fns]
    with context():
        for _ in range(warmup):
            for fn in fns:
                fn(x)
        for r in range(repeats):
            for k in range(len(fns)):
                i = (k + r) % len(fns)
                _sync(x.device)
                start = time.perf_counter()
                fns[i](x)
                _sync(x.device)
                times[i].append((time.perf_counter() - start) * 1000.0)
    return [summarize(t) for t in times]
