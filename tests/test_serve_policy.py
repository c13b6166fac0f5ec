"""The serving policy and the batch queue without HTTP: made-up latencies, a fake model, exact decisions."""

import asyncio
import threading

import numpy as np
import pytest

from ddnn.deploy.serve.batching import ArrivalRate, Batcher
from ddnn.deploy.serve.policy import FixedDepth, LatencyTarget, QueueState, backlog_ms, most_accurate
from ddnn.runtime import KIND, Depth, SwitchableModel

# most accurate first; "small" and "tiny" tie on validation top-1 and tiny costs fewer MACs
DEPTHS = [Depth(0, "full", (3, 3), 300, 3000, 95.0, 94.0), Depth(1, "mid", (2, 2), 200, 2000, 93.0, 92.0),
          Depth(2, "small", (1, 2), 150, 1500, 90.0, 88.0), Depth(3, "tiny", (1, 1), 100, 1000, 89.0, 88.0)]
PER_IMAGE = [1.0, 0.6, 0.4, 0.3]  # ms per image: depth i takes PER_IMAGE[i] * n ms for n images


def expected(index: int, batch: int) -> float:
    return PER_IMAGE[index] * batch


def test_most_accurate_ranks_by_validation_then_fewer_macs():
    assert most_accurate(DEPTHS).name == "full"
    assert most_accurate(DEPTHS[2:]).name == "tiny"  # tie on val top-1 88.0: fewer MACs


def test_backlog_counts_full_batches_and_the_rest():
    assert backlog_ms(expected, 0, 0, 8) == 0.0
    assert backlog_ms(lambda i, n: 2.0 + n, 0, 19, 8) == pytest.approx(2 * (2 + 8) + (2 + 3))


def test_an_idle_server_runs_its_most_accurate_depth():
    policy = LatencyTarget(target_ms=10.0, headroom=0.8)  # plans on 8 ms
    decision = policy.choose(QueueState(batch=1, max_batch=8), DEPTHS, expected)
    assert (decision.depth.name, decision.expected_ms, decision.fits) == ("full", 1.0, True)


def test_a_growing_queue_moves_the_depth_down_step_by_step():
    policy = LatencyTarget(target_ms=10.0, headroom=0.8)
    chosen = []
    for queued in (0, 6, 10, 16, 40):
        # a batch of 2 about to run, `queued` images behind it that have waited 1 ms
        state = QueueState(batch=2, waited_ms=1.0, queued=queued, queued_waited_ms=1.0 if queued else 0.0, max_batch=8)
        chosen.append(policy.choose(state, DEPTHS, expected))
    # worst-off request: 1 + (2 + queued) * per_image; within 8 ms: full up to 5 images, mid 11, tiny 23
    assert [d.depth.name for d in chosen] == ["full", "mid", "tiny", "tiny", "tiny"]
    assert [d.fits for d in chosen] == [True, True, True, True, False]
    assert chosen[1].expected_ms == pytest.approx(1.0 + 8 * 0.6)
    assert chosen[4].expected_ms == pytest.approx(1.0 + 42 * 0.3)  # none fits: the fastest, said so


def test_waiting_counts_and_the_time_after_the_batch_is_added():
    policy = LatencyTarget(target_ms=10.0, headroom=1.0)
    state = QueueState(batch=1, waited_ms=6.5, after_ms=2.0)
    assert policy.choose(state, DEPTHS, expected).depth.name == "full"  # 6.5 + 1 + 2
    state = QueueState(batch=1, waited_ms=7.2, after_ms=2.0)
    assert policy.choose(state, DEPTHS, expected).depth.name == "mid"  # 7.2 + 0.6 + 2 (full: 10.2)


def test_a_depth_too_slow_for_the_arrivals_is_skipped_even_with_an_empty_queue():
    policy = LatencyTarget(target_ms=10.0, headroom=0.8)
    idle = dict(batch=1, max_batch=8)  # every depth answers this one request in time
    chosen = [policy.choose(QueueState(**idle, arrivals_per_s=rate), DEPTHS, expected) for rate in (700, 1000, 1500, 5000)]
    # busy share = rate * per-image ms / 1000: full 0.7 fits; at 1000/s full 1.0 > 0.8, mid 0.6; at 1500/s
    # mid 0.9, small 0.6 (tiny ties small on val top-1 at fewer MACs: 0.45); at 5000/s none: the fastest, said so
    assert [d.depth.name for d in chosen] == ["full", "mid", "tiny", "tiny"]
    assert [d.fits for d in chosen] == [True, True, True, False]
    assert policy.busy_share(QueueState(**idle, arrivals_per_s=1000), 1, expected) == pytest.approx(0.6)


def test_the_arrival_rate_counts_the_last_second_only():
    rate = ArrivalRate(window_s=1.0)
    assert rate.per_s(0.0) == 0.0
    rate.add(0.0, 3)
    rate.add(0.5, 2)
    assert rate.per_s(0.6) == pytest.approx(5.0)
    assert rate.per_s(1.2) == pytest.approx(2.0)  # the images at 0.0 left the window
    assert rate.per_s(2.0) == 0.0
    rate.add(2.1, 4)
    assert ArrivalRate(window_s=0.5).per_s(0.0) == 0.0 and rate.per_s(2.1) == pytest.approx(4.0)


def test_fixed_depth_ignores_the_queue():
    policy = FixedDepth(DEPTHS[0])
    assert policy.choose(QueueState(batch=8, queued=100, waited_ms=50.0), DEPTHS, expected).depth.name == "full"
    assert "full" in policy.describe()


@pytest.mark.parametrize("kw", [dict(target_ms=0), dict(target_ms=float("inf")), dict(target_ms=5, headroom=0),
                                dict(target_ms=5, headroom=1.5)])
def test_bad_targets_are_refused(kw):
    with pytest.raises(ValueError):
        LatencyTarget(**kw)


class GatedModel(SwitchableModel):
    """A switchable model over a fake backend: logits filled with the depth index; each call can be held
    until the test releases it, and the latency expectation is PER_IMAGE exactly (no clock)."""

    def __init__(self) -> None:
        info = {"kind": KIND, "input": {"shape": ["batch", 1, 2, 2]},
                "depths": [dict(index=d.index, name=d.name, blocks=list(d.blocks), params=d.params, macs=d.macs,
                                top1=d.top1, val_top1=d.val_top1) for d in DEPTHS]}
        super().__init__(self._backend, info)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[tuple[int, int]] = []

    def _backend(self, images, index):
        self.entered.set()
        self.gate.wait(5)
        self.calls.append((index, len(images)))
        return np.full((len(images), 3), float(index), dtype=np.float32) + images.reshape(len(images), -1)[:, :1]

    def expected_ms(self, depth, batch):
        return expected(self.depth(depth).index, batch)


def test_queued_requests_run_batched_and_shallower_and_each_gets_its_own_rows():
    async def scenario():
        model = GatedModel()
        # a clock that stands still: no request has waited, so the decisions depend on the queue alone
        batcher = Batcher(model, LatencyTarget(target_ms=10.0, headroom=0.8), max_batch=4, clock=lambda: 0.0)
        batcher.start()
        image = lambda v: np.full((1, 1, 2, 2), v, dtype=np.float32)  # noqa: E731
        first = asyncio.ensure_future(batcher.submit(image(0.5)))
        while not model.entered.is_set():  # the worker holds the first request in the model (gate closed)
            await asyncio.sleep(0.001)
        rest = [asyncio.ensure_future(batcher.submit(image(i / 10))) for i in range(9)]
        forced = asyncio.ensure_future(batcher.submit(image(0.9), depth=DEPTHS[1]))
        await asyncio.sleep(0.01)
        model.gate.set()
        done = [await first] + [await r for r in rest] + [await forced]
        await batcher.stop()
        return model, done

    model, done = asyncio.run(scenario())
    # the idle request: full depth alone; then 9 queued: batches of 4, 4, 1 at the depth the queue allows;
    # the forced request runs at its own depth, not batched with the others
    assert model.calls[0] == (0, 1)
    assert [n for _, n in model.calls[1:]] == [4, 4, 1, 1]
    # a batch of 4 with 6 images behind (5 + the forced one): 10 images' time, full 10 ms > 8, mid 6 ms fits;
    # then 4 with 2 behind: full 6 ms fits; then 1 with 1 behind: full
    assert [i for i, _ in model.calls[1:]] == [1, 0, 0, 1]
    first, rest, forced = done[0], done[1:10], done[10]
    assert first.depth.name == "full" and first.batch == 1
    assert [r.depth.name for r in rest] == ["mid"] * 4 + ["full"] * 5
    for i, r in enumerate(rest):  # each request gets the rows of its own images back
        assert r.logits.shape == (1, 3) and r.logits[0, 0] == pytest.approx(r.depth.index + i / 10)
    assert forced.depth.name == "mid" and forced.batch == 1 and forced.logits[0, 0] == pytest.approx(1.9)


def test_a_failing_model_call_fails_its_own_requests_and_the_worker_goes_on():
    class Flaky(GatedModel):
        def _backend(self, images, index):
            if (images == 0.99).any():
                raise RuntimeError("bad batch")
            return super()._backend(images, index)

    async def scenario():
        model = Flaky()
        model.gate.set()
        batcher = Batcher(model, FixedDepth(DEPTHS[2]), max_batch=4)
        batcher.start()
        with pytest.raises(RuntimeError, match="bad batch"):
            await batcher.submit(np.full((1, 1, 2, 2), 0.99, dtype=np.float32))
        ok = await batcher.submit(np.full((1, 1, 2, 2), 0.5, dtype=np.float32))
        await batcher.stop()
        return ok

    ok = asyncio.run(scenario())
    assert ok.depth.name == "small" and ok.logits[0, 0] == pytest.approx(2.5)


def test_the_batcher_tells_the_policy_the_arrival_rate():
    class Recording(FixedDepth):
        def choose(self, state, depths, expected):
            seen.append(state.arrivals_per_s)
            return super().choose(state, depths, expected)

    seen: list[float] = []
    now = [0.0]

    async def scenario():
        model = GatedModel()
        model.gate.set()
        batcher = Batcher(model, Recording(DEPTHS[0]), max_batch=4, clock=lambda: now[0])
        batcher.start()
        for t, n in ((0.0, 2), (0.1, 3), (0.2, 1)):  # 6 images within the 0.25 s window
            now[0] = t
            await batcher.submit(np.zeros((n, 1, 2, 2), dtype=np.float32))
        now[0] = 0.5  # the three earlier submissions have left the window
        await batcher.submit(np.zeros((1, 1, 2, 2), dtype=np.float32))
        await batcher.stop()

    asyncio.run(scenario())
    assert seen == pytest.approx([2 / 0.25, 5 / 0.25, 6 / 0.25, 1 / 0.25])
