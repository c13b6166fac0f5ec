"""A queue of predict requests and the one worker that runs them, in batches, on the switchable model.

Why batch: one call on 8 images costs less than 8 calls on one (fewer trips into onnxruntime and
through the executor; the file's latency per image falls with the batch size), so when requests
arrive faster than the model answers, the worker takes what has queued meanwhile, up to `max_batch`
images, in one call. It never waits for a batch to fill: an idle server answers a lone request at
once, and batches form only where they pay, under load. Requests that ask for a depth of their own
are batched only with neighbours in the queue that ask for the same (first come, first served);
the others' depth is the policy's, decided per batch from the queue at that moment.

The model runs on one thread beside the event loop (onnxruntime releases the GIL), so requests keep
being read and queued while a batch runs, and `ddnn.runtime.SwitchableModel` sees one caller at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ddnn.deploy.serve.policy import QueueState
from ddnn.runtime import Depth, SwitchableModel


@dataclass(frozen=True)
class Served:
    """What a request gets back: its logits and how its batch ran."""

    logits: np.ndarray  # (its images, classes)
    depth: Depth
    queue_ms: float  # from its arrival (the handler's start, or submission) to the start of its batch
    inference_ms: float  # the batch's model call
    batch: int  # images in that batch
    done: float  # the clock when the batch ended


@dataclass
class _Job:
    images: np.ndarray
    depth: Depth | None  # asked for, else the policy's
    submitted: float
    future: asyncio.Future = field(repr=False)


class ArrivalRate:
    """Images per second submitted over the last `window_s` seconds (fewer while the server is younger).
    A quarter second follows a jump in the load within a few batches and still counts dozens of
    arrivals at the rates where it matters (a 1 s window let a too-slow depth run for the first
    second of a 4x load and missed the p99 target: benchmarks/RESULTS.md, issue 17)."""

    def __init__(self, window_s: float = 0.25) -> None:
        self.window_s = window_s
        self._events: deque[tuple[float, int]] = deque()
        self._images = 0

    def add(self, now: float, images: int) -> None:
        self._events.append((now, images))
        self._images += images

    def per_s(self, now: float) -> float:
        while self._events and self._events[0][0] < now - self.window_s:
            self._images -= self._events.popleft()[1]
        return self._images / self.window_s


class Batcher:
    """`await submit(images, depth)` from request handlers; `start()` and `stop()` from the app's lifespan."""

    def __init__(self, model: SwitchableModel, policy, max_batch: int = 8,
                 clock: Callable[[], float] = time.perf_counter,
                 on_batch: Callable[[Depth, int, float], None] | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model = model
        self.policy = policy
        self.max_batch = max_batch
        self.clock = clock
        self.on_batch = on_batch  # (depth, images, ms) after each batch: metrics
        self._queue: deque[_Job] = deque()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ddnn-model")
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.after_ms = 0.0  # moving average of batch end -> answer, from `answered`
        self.arrivals = ArrivalRate()

    @property
    def queued_images(self) -> int:
        return sum(len(job.images) for job in self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        """Serve what is queued, then end the worker."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, images: np.ndarray, depth: Depth | None = None, arrived: float | None = None) -> Served:
        """The request's logits; `arrived` (this batcher's clock): when its handler started, from which its
        wait counts (default: now)."""
        if self._stopping:
            raise RuntimeError("the server is shutting down")
        future = asyncio.get_running_loop().create_future()
        now = self.clock()
        self.arrivals.add(now, len(images))
        self._queue.append(_Job(images, depth, now if arrived is None else arrived, future))
        self._wake.set()
        return await future

    def answered(self, served: Served, alpha: float = 0.2) -> None:
        """A request's answer is ready: learn how long answers take after their batch ends."""
        self.after_ms += alpha * (max(0.0, (self.clock() - served.done) * 1e3) - self.after_ms)

    def _take(self) -> list[_Job]:
        """The front of the queue: jobs with the first one's depth request, up to max_batch images
        (a first job larger than that runs alone)."""
        first = self._queue.popleft()
        jobs, images = [first], len(first.images)
        while self._queue and self._queue[0].depth == first.depth and images + len(self._queue[0].images) <= self.max_batch:
            job = self._queue.popleft()
            jobs.append(job)
            images += len(job.images)
        return jobs

    def _decide(self, jobs: list[_Job], now: float) -> Depth:
        if jobs[0].depth is not None:
            return jobs[0].depth
        state = QueueState(batch=sum(len(j.images) for j in jobs), waited_ms=(now - jobs[0].submitted) * 1e3,
                           queued=self.queued_images,
                           queued_waited_ms=(now - self._queue[0].submitted) * 1e3 if self._queue else 0.0,
                           max_batch=self.max_batch, after_ms=self.after_ms,
                           arrivals_per_s=self.arrivals.per_s(now))
        return self.policy.choose(state, self.model.depths, self.model.expected_ms).depth

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            jobs = self._take()
            start = self.clock()
            try:
                depth = self._decide(jobs, start)
                x = np.concatenate([j.images for j in jobs]) if len(jobs) > 1 else jobs[0].images
                result = await loop.run_in_executor(self._executor, lambda: self.model.run(x, depth=depth.index))
            except Exception as err:  # one failed batch fails its own requests only; the worker goes on
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            done = self.clock()
            if self.on_batch is not None:
                self.on_batch(depth, len(x), result.ms)
            offset = 0
            for job in jobs:
                n = len(job.images)
                if not job.future.done():  # a client that went away leaves a cancelled future
                    job.future.set_result(Served(result.logits[offset:offset + n], depth,
                                                 (start - job.submitted) * 1e3, result.ms, len(x), done))
                offset += n
