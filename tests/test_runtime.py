"""ddnn.runtime without a real model: a fake backend whose calls move a fake clock, so every latency is exact."""

import numpy as np
import pytest

from ddnn.runtime import KIND, LatencyModel, SwitchableError, SwitchableModel


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0  # seconds

    def __call__(self) -> float:
        return self.now


class FakeBackend:
    """Depth i takes fixed[i] + per_image[i] * n ms of fake time and returns logits filled with i."""

    def __init__(self, clock: FakeClock, fixed: list[float], per_image: list[float]) -> None:
        self.clock, self.fixed, self.per_image = clock, fixed, per_image
        self.calls: list[tuple[int, int]] = []

    def __call__(self, images: np.ndarray, index: int) -> np.ndarray:
        self.calls.append((index, len(images)))
        self.clock.now += (self.fixed[index] + self.per_image[index] * len(images)) / 1000.0
        return np.full((len(images), 3), float(index), dtype=np.float32)


# full net most accurate and slowest; "small" and "tiny" tie on val top-1, tiny costs fewer MACs
DEPTHS = [
    {"index": 0, "name": "full", "blocks": [3, 3], "params": 300, "macs": 3000, "top1": 95.0, "val_top1": 94.0},
    {"index": 1, "name": "mid", "blocks": [2, 2], "params": 200, "macs": 2000, "top1": 93.0, "val_top1": 92.0},
    {"index": 2, "name": "small", "blocks": [1, 2], "params": 150, "macs": 1500, "top1": 90.0, "val_top1": 88.0},
    {"index": 3, "name": "tiny", "blocks": [1, 1], "params": 100, "macs": 1000, "top1": 89.0, "val_top1": 88.0},
]
FIXED = [1.0, 0.6, 0.4, 0.3]  # ms
PER_IMAGE = [0.5, 0.3, 0.2, 0.1]  # ms per image


def make(calibrate=True, fixed=FIXED, per_image=PER_IMAGE):
    clock = FakeClock()
    backend = FakeBackend(clock, list(fixed), list(per_image))
    info = {"kind": KIND, "input": {"shape": ["batch", 1, 4, 4]}, "depths": DEPTHS}
    model = SwitchableModel(backend, info, clock=clock)
    if calibrate:
        model.calibrate(batch_sizes=(1, 8), warmup=1, repeats=3)
    return model, backend


def images(n):
    return np.zeros((n, 1, 4, 4), dtype=np.float32)


def test_latency_between_beyond_and_below_the_measured_batch_sizes():
    model = LatencyModel({2: 4.0, 10: 12.0})
    assert model.expected_ms(2) == 4.0 and model.expected_ms(10) == 12.0
    assert model.expected_ms(6) == pytest.approx(8.0)  # half-way between
    assert model.expected_ms(20) == pytest.approx(24.0)  # beyond: 1.2 ms per image, as at 10
    assert model.expected_ms(1) == 4.0  # below: the smallest size's time
    with pytest.raises(SwitchableError, match="batch >= 1 -> ms > 0"):
        LatencyModel({1: 0.0})


def test_observe_moves_the_expectation_by_alpha_in_log_space():
    model = LatencyModel({1: 1.0, 4: 2.0}, alpha=0.25)
    model.observe(4, 32.0)  # measured 16x the expectation: 16 ** 0.25 = 2x
    assert model.expected_ms(4) == pytest.approx(4.0) and model.expected_ms(1) == 1.0
    model.observe(4, 4.0)  # as expected: unchanged
    assert model.expected_ms(4) == pytest.approx(4.0) and model.observed == 2
    model.observe(2, 2.0 * 81)  # a new size starts from its interpolated 2.0 ms: 81 ** 0.25 = 3x
    assert model.points[2] == pytest.approx(6.0) and model.expected_ms(3) == pytest.approx(5.0)


def test_calibration_measures_each_depth_on_the_clock():
    model, backend = make()
    for i, d in enumerate(model.depths):
        assert model.latency[d.name].points == {1: pytest.approx(FIXED[i] + PER_IMAGE[i]),
                                                8: pytest.approx(FIXED[i] + 8 * PER_IMAGE[i])}
    # per depth and batch size: 1 warm-up + 3 timed calls
    assert len(backend.calls) == 4 * 2 * 4 and backend.calls[:4] == [(0, 1)] * 4 and backend.calls[4:8] == [(0, 8)] * 4


@pytest.mark.parametrize("batch, budget, expected, fits", [
    (1, 10.0, "full", True),  # everything fits: the most accurate
    (1, 1.49, "mid", True),  # full needs 1.5 ms at batch 1
    (1, 0.91, "mid", True),  # mid needs 0.9
    (1, 0.89, "tiny", True),  # then small (0.6) and tiny (0.4) tie on val top-1: fewer MACs wins
    (8, 2.1, "tiny", True),  # small (2.0 ms) and tiny (1.1 ms) fit and tie: tiny again
    (8, 1.0, "tiny", False),  # nothing fits: the fastest, flagged
])
def test_budget_picks_the_most_accurate_depth_that_fits(batch, budget, expected, fits):
    model, _ = make()
    choice = model.choose(batch, budget)
    assert (choice.depth.name, choice.fits) == (expected, fits)
    out = model.run(images(batch), budget_ms=budget)
    assert out.depth.name == expected and out.fits is fits
    assert np.all(out.logits == out.depth.index)  # the backend really ran that depth
    assert out.ms == pytest.approx(out.expected_ms)  # the fake machine is as fast as calibrated


def test_observed_calls_shift_the_choice_when_a_depth_slows_down():
    model, backend = make()
    assert model.choose(1, 1.6).depth.name == "full"  # expected 1.5 ms
    backend.fixed[0], backend.per_image[0] = 2.0, 1.0  # the machine gets busy: full now takes 3 ms at batch 1
    before = model.expected_ms("full", 1)
    for _ in range(3):
        out = model.run(images(1), depth="full")
        assert out.ms == pytest.approx(3.0)
    expected = before * 2 ** (1 - 0.8 ** 3)  # three EMA steps towards 2x (3 ms / 1.5 ms), alpha 0.2 in log space
    assert model.expected_ms("full", 1) == pytest.approx(expected)
    assert model.choose(1, 1.6).depth.name == "mid"
    assert model.latency["mid"].observed == 0  # other depths keep their own measurements


def test_depth_by_name_or_index_and_default():
    model, _ = make(calibrate=False)
    assert model.run(images(2), depth=2).depth.name == "small"
    assert model.run(images(2), depth=np.int64(3)).depth.name == "tiny"
    out = model.run(images(2), depth="mid")
    assert out.depth.index == 1 and out.expected_ms is None  # no latency model before calibration
    assert model.run(images(2)).depth.name == "full"  # no depth, no budget: the most accurate


def test_bad_requests_are_refused_with_a_message():
    model, _ = make(calibrate=False)
    with pytest.raises(SwitchableError, match="no depth 'huge'.*0=full, 1=mid"):
        model.run(images(1), depth="huge")
    with pytest.raises(SwitchableError, match="no depth 4"):
        model.run(images(1), depth=4)
    with pytest.raises(SwitchableError, match=r"shape \(batch >= 1, 1, 4, 4\).*got shape \(2, 4, 4\)"):
        model.run(np.zeros((2, 4, 4)), depth=0)
    with pytest.raises(SwitchableError, match="float32 NCHW array"):
        model.run([["a"]], depth=0)
    with pytest.raises(SwitchableError, match="not both"):
        model.run(images(1), depth=0, budget_ms=1.0)
    with pytest.raises(SwitchableError, match="no latency measured"):
        model.run(images(1), budget_ms=1.0)
    model.calibrate(batch_sizes=(1, 2), warmup=0, repeats=1)
    with pytest.raises(SwitchableError, match="budget_ms must be > 0"):
        model.run(images(1), budget_ms=-1.0)
    with pytest.raises(SwitchableError, match="not a ddnn switchable file"):
        SwitchableModel(lambda x, i: x, {"kind": "something else"})
    with pytest.raises(SwitchableError, match="incomplete"):
        SwitchableModel(lambda x, i: x, {"kind": KIND, "depths": [{"index": 0}]})
    assert model.expected_ms(0, 1) > 0
