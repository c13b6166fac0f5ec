"""Which depth the next batch runs at: a fixed depth, or the most accurate one that keeps a latency target.

Pure logic (no HTTP, no clock, no model): the batch worker describes the queue as a `QueueState`,
gives the per-depth latency expectation (`ddnn.runtime`'s, measured at load and kept current) as a
function, and gets a `Decision`. Tests drive it with made-up numbers.

The latency target plans on the worst-off request the decision touches. The batch about to run
finishes after `t(d, batch)`; its oldest request has already waited `waited_ms`. The requests left in
the queue run after it, in batches of at most `max_batch`, at (we assume) the same depth, so the
oldest of them finishes after `queued_waited_ms + t(d, batch) + backlog(d)`. A request's wait counts
from when its handler started, so time lost before it reached the queue (reading and decoding the body
on a busy event loop) counts too, and `after_ms` is what a request has lately taken from the end of
its batch to its answer (the server measures it). A depth fits when the later of the two, plus
`after_ms`, is within `headroom * target_ms`: the expectation is a median, and the headroom is what is left for the
tail of a p99. A depth must also keep up with the arrivals: at the images per second that lately
arrived, its time per image in full batches may fill at most `headroom` of the worker's time, else
its queue grows without bound whatever it holds now (the queue alone lets a depth that is too slow
come back as soon as the queue drains, and the queue then rebuilds: the p99 pays for that swing).
The most accurate depth that fits runs (ties: fewer MACs); when none fits, the fastest. A queue that
grows therefore pushes the depth down until the queue drains, and an idle server runs its most
accurate depth.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ddnn.runtime import Depth

Expected = Callable[[int, int], float]  # (depth index, batch size) -> expected ms


@dataclass(frozen=True)
class QueueState:
    """The queue as the worker sees it when a batch is about to run."""

    batch: int  # images in the batch about to run
    waited_ms: float = 0.0  # how long the batch's oldest request has waited so far
    queued: int = 0  # images still waiting behind the batch
    queued_waited_ms: float = 0.0  # how long the oldest of those has waited
    max_batch: int = 8  # the most images the worker runs at once
    after_ms: float = 0.0  # expected time from a batch's end to its requests' answers
    arrivals_per_s: float = 0.0  # images per second that lately arrived


@dataclass(frozen=True)
class Decision:
    depth: Depth
    expected_ms: float  # the worst-off request's expected latency at this depth (overhead included)
    fits: bool  # False: no depth was expected to meet the target; the fastest runs


def most_accurate(depths: Sequence[Depth]) -> Depth:
    """The depth with the best validation top-1 (test where the file has no validation); ties: fewer MACs."""
    return max(depths, key=lambda d: (d.accuracy, -d.macs))


def backlog_ms(expected: Expected, index: int, queued: int, max_batch: int) -> float:
    """Expected time to serve `queued` images at depth `index` in batches of at most `max_batch`."""
    full, rest = divmod(queued, max_batch)
    return full * expected(index, max_batch) + (expected(index, rest) if rest else 0.0)


@dataclass(frozen=True)
class FixedDepth:
    """Every batch at one depth."""

    depth: Depth

    def choose(self, state: QueueState, depths: Sequence[Depth], expected: Expected) -> Decision:
        return Decision(self.depth, expected(self.depth.index, state.batch), True)

    def describe(self) -> str:
        return f"fixed depth {self.depth.index} ({self.depth.name})"


@dataclass(frozen=True)
class LatencyTarget:
    """The most accurate depth whose worst-off request is expected within `headroom * target_ms`."""

    target_ms: float
    headroom: float = 0.8

    def __post_init__(self) -> None:
        if not (self.target_ms > 0 and math.isfinite(self.target_ms)):
            raise ValueError(f"the latency target must be a positive number of ms, got {self.target_ms}")
        if not 0 < self.headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {self.headroom}")

    def worst_ms(self, state: QueueState, index: int, expected: Expected) -> float:
        own = expected(index, state.batch)
        behind = state.queued_waited_ms + own + backlog_ms(expected, index, state.queued, state.max_batch)
        return state.after_ms + max(state.waited_ms + own, behind if state.queued else 0.0)

    def busy_share(self, state: QueueState, index: int, expected: Expected) -> float:
        """The share of the worker's time depth `index` needs for the arrivals, in full batches."""
        return state.arrivals_per_s * expected(index, state.max_batch) / state.max_batch / 1e3

    def choose(self, state: QueueState, depths: Sequence[Depth], expected: Expected) -> Decision:
        worst = {d.index: self.worst_ms(state, d.index, expected) for d in depths}
        fitting = [d for d in depths if worst[d.index] <= self.headroom * self.target_ms
                   and self.busy_share(state, d.index, expected) <= self.headroom]
        if fitting:
            best = most_accurate(fitting)
            return Decision(best, worst[best.index], True)
        fastest = min(depths, key=lambda d: (worst[d.index], d.macs))
        return Decision(fastest, worst[fastest.index], False)

    def describe(self) -> str:
        return f"p99 <= {self.target_ms:g} ms (planned at {self.headroom:g} of it)"
