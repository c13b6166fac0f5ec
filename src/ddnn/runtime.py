"""Run a switchable ddnn file (`ddnn export --switchable`) on a device: any depth, or the best that fits a budget.

This module is self-contained: it needs numpy and onnxruntime (for `.onnx`) or torch (for
`.torchscript.pt`), never the rest of ddnn, so a device can copy this one file next to the model.

    m = load("resnet32-switchable.onnx")          # times every depth on this machine first
    out = m.run(images, budget_ms=2.0)            # the most accurate depth expected to fit
    out.logits, out.depth.name, out.ms

Latency model: each depth's expected time per batch size, measured at load (median of a few calls at
batch 1 and 8 by default), linear between the sizes measured, and kept current from every call it
serves (an exponential moving average in log space, so one stalled call moves it little). `clock`
is injectable, so tests (and a server that keeps its own time) control it.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

METADATA_KEY = "ddnn"  # ONNX metadata_props key / TorchScript extra file "ddnn.json"
KIND = "ddnn-switchable"  # the metadata's "kind"


class SwitchableError(ValueError):
    """A request the file cannot serve (unknown depth, wrong input shape, unreadable file)."""


@dataclass(frozen=True)
class Depth:
    """One sub-net in the file: its index (the file's `depth` input), name and what it costs and scores."""

    index: int
    name: str
    blocks: tuple[int, ...]
    params: int
    macs: int
    top1: float  # test top-1 (%) of the exported checkpoint
    val_top1: float | None = None

    @property
    def accuracy(self) -> float:
        """What ranks the depths: validation top-1 where the run has one (choosing on test flatters), else test."""
        return self.val_top1 if self.val_top1 is not None else self.top1


@dataclass
class LatencyModel:
    """Expected ms of one depth per batch size: what calls at that size took, linear in between.

    Points rather than a line a + b*n: a line is right only where time grows linearly with the batch
    (caches and thread pools make it bend), while the points are exact at every size measured or
    served and learn a new size from its first call. Below the smallest size measured, its time (an
    upper bound); beyond the largest, that size's time per image.
    """

    points: dict[int, float]  # batch size -> ms
    alpha: float = 0.2  # weight of each observed call
    observed: int = 0

    def __post_init__(self) -> None:
        if not self.points or any(n < 1 or not ms > 0 for n, ms in self.points.items()):
            raise SwitchableError(f"latency points must be batch >= 1 -> ms > 0, got {self.points}")

    def expected_ms(self, batch: int) -> float:
        if batch in self.points:
            return self.points[batch]
        sizes = sorted(self.points)
        if batch < sizes[0]:
            return self.points[sizes[0]]
        if batch > sizes[-1]:
            return self.points[sizes[-1]] * batch / sizes[-1]
        hi = next(n for n in sizes if n > batch)
        lo = max(n for n in sizes if n < batch)
        return self.points[lo] + (self.points[hi] - self.points[lo]) * (batch - lo) / (hi - lo)

    def observe(self, batch: int, ms: float) -> None:
        """Move the expectation at this batch size towards a measured call: an exponential moving
        average in log space, so one stalled call (10x) moves it by 10 ** alpha, not by alpha * 10."""
        if not ms > 0:
            return
        expected = self.expected_ms(batch)
        self.points[batch] = expected * (ms / expected) ** self.alpha
        self.observed += 1


@dataclass(frozen=True)
class Choice:
    """The depth a budget picks, what it is expected to take, and whether that fits."""

    depth: Depth
    expected_ms: float
    fits: bool


@dataclass(frozen=True)
class Result:
    logits: np.ndarray  # (batch, classes)
    depth: Depth
    ms: float  # measured time of this call
    expected_ms: float | None  # the latency model's prediction before the call (None before calibration)
    fits: bool | None = None  # with a budget: whether the chosen depth was expected to fit (False: fastest instead)


class SwitchableModel:
    """A loaded switchable file: its depths, their latency models, and `run`. One caller at a time:
    `run` updates the latency models (a server serialises calls, or keeps one model per worker)."""

    def __init__(self, backend: Callable[[np.ndarray, int], np.ndarray], info: dict,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if info.get("kind") != KIND:
            raise SwitchableError(f"not a ddnn switchable file (its metadata's kind is {info.get('kind')!r})")
        try:
            self.depths = [Depth(d["index"], d["name"], tuple(d["blocks"]), d["params"], d["macs"], d["top1"],
                                 d.get("val_top1")) for d in info["depths"]]
            self.input_shape = tuple(info["input"]["shape"][1:])
        except (KeyError, TypeError) as err:
            raise SwitchableError(f"the file's ddnn metadata is incomplete ({type(err).__name__}: {err})") from None
        self.backend = backend
        self.info = info
        self.clock = clock
        self.latency: dict[str, LatencyModel] = {}

    def depth(self, key: int | str) -> Depth:
        """A depth by index or name."""
        by_index = isinstance(key, (int, np.integer)) and not isinstance(key, bool)
        for d in self.depths:
            if (d.index if by_index else d.name) == key:
                return d
        raise SwitchableError(f"no depth {key!r} in this file; its depths: "
                              + ", ".join(f"{d.index}={d.name}" for d in self.depths))

    def _images(self, images) -> np.ndarray:
        try:
            x = np.ascontiguousarray(images, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise SwitchableError(f"images must be a float32 NCHW array ({err})") from None
        if x.ndim != 4 or x.shape[1:] != self.input_shape or len(x) == 0:
            raise SwitchableError(f"images must be float32 NCHW of shape (batch >= 1, {', '.join(map(str, self.input_shape))}) "
                                  f"with values in [0, 1], got shape {tuple(x.shape)}")
        return x

    def _timed(self, x: np.ndarray, depth: Depth) -> tuple[np.ndarray, float]:
        start = self.clock()
        logits = self.backend(x, depth.index)
        return logits, (self.clock() - start) * 1000.0

    def calibrate(self, batch_sizes: Sequence[int] = (1, 8), warmup: int = 2, repeats: int = 5, seed: int = 0) -> None:
        """Time every depth here: the median of `repeats` calls after `warmup`, per batch size."""
        rng = np.random.default_rng(seed)
        for depth in self.depths:
            points = {}
            for n in batch_sizes:
                x = rng.random((n, *self.input_shape), dtype=np.float32)
                for _ in range(warmup):
                    self.backend(x, depth.index)
                points[n] = statistics.median(self._timed(x, depth)[1] for _ in range(repeats))
            self.latency[depth.name] = LatencyModel(points)

    def expected_ms(self, depth: int | str, batch: int) -> float:
        d = self.depth(depth)
        if d.name not in self.latency:
            raise SwitchableError("no latency measured yet: load with calibrate=True or call calibrate()")
        return self.latency[d.name].expected_ms(batch)

    def choose(self, batch: int, budget_ms: float) -> Choice:
        """The most accurate depth expected to take <= budget_ms for this batch (ties: fewer MACs);
        if none fits, the fastest, with fits=False."""
        expected = {d.name: self.expected_ms(d.index, batch) for d in self.depths}
        fitting = [d for d in self.depths if expected[d.name] <= budget_ms]
        if fitting:
            best = max(fitting, key=lambda d: (d.accuracy, -d.macs))
            return Choice(best, expected[best.name], True)
        fastest = min(self.depths, key=lambda d: expected[d.name])
        return Choice(fastest, expected[fastest.name], False)

    def run(self, images, depth: int | str | None = None, budget_ms: float | None = None) -> Result:
        """Logits of `images` (float32 NCHW in [0, 1]) at a given depth, or at the depth `budget_ms` picks;
        with neither, the most accurate depth. Every call updates that depth's latency model."""
        if depth is not None and budget_ms is not None:
            raise SwitchableError("give a depth or a budget, not both")
        x = self._images(images)
        fits = None
        if budget_ms is not None:
            if not budget_ms > 0:
                raise SwitchableError(f"budget_ms must be > 0, got {budget_ms}")
            choice = self.choose(len(x), budget_ms)
            chosen, fits = choice.depth, choice.fits
        elif depth is not None:
            chosen = self.depth(depth)
        else:
            chosen = max(self.depths, key=lambda d: (d.accuracy, -d.macs))
        model = self.latency.get(chosen.name)
        expected = model.expected_ms(len(x)) if model else None
        logits, ms = self._timed(x, chosen)
        if model:
            model.observe(len(x), ms)
        return Result(logits, chosen, ms, expected, fits)


# -- backends: (images, depth index) -> logits ---------------------------------------------------
@dataclass
class OnnxBackend:
    session: object

    def __call__(self, images: np.ndarray, index: int) -> np.ndarray:
        return self.session.run(None, {"image": images, "depth": np.array(index, dtype=np.int64)})[0]

    def metadata(self) -> str | None:
        return self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)


@dataclass
class TorchScriptBackend:
    module: object
    meta: str | None = None

    def __call__(self, images: np.ndarray, index: int) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.module(torch.from_numpy(images), int(index)).numpy()

    def metadata(self) -> str | None:
        return self.meta


def _open(path: Path, fmt: str, threads: int | None, providers: Sequence[str]):
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        return OnnxBackend(ort.InferenceSession(str(path), options, providers=list(providers)))
    import warnings

    import torch

    if threads:
        torch.set_num_threads(threads)
    extra = {f"{METADATA_KEY}.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return TorchScriptBackend(module, extra[f"{METADATA_KEY}.json"] or None)


def load(path: str | Path, format: str | None = None, calibrate: bool = True, threads: int | None = None,
         clock: Callable[[], float] = time.perf_counter, providers: Sequence[str] = ("CPUExecutionProvider",),
         batch_sizes: Sequence[int] = (1, 8)) -> SwitchableModel:
    """Open a switchable file (format from its name: .onnx, else TorchScript), read its depths from the
    file's metadata (the `.json` beside it as fallback) and, with `calibrate`, time every depth here."""
    path = Path(path)
    fmt = format or ("onnx" if path.suffix == ".onnx" else "torchscript")
    if fmt not in ("onnx", "torchscript"):
        raise SwitchableError(f"format must be onnx or torchscript, got {fmt!r}")
    if path.is_dir():
        raise SwitchableError(f"{path} is a folder; give the switchable file (`ddnn export --switchable` writes it)")
    if not path.is_file():
        raise SwitchableError(f"{path} does not exist")
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise SwitchableError(f"cannot read {path}: {err.strerror}") from None
    try:
        backend = _open(path, fmt, threads, providers)
    except Exception as err:  # onnxruntime and torch.jit raise their own types for a file they cannot parse
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SwitchableError(f"{path} is not a readable {fmt} file ({first[:160]}); "
                              "is it a file written by `ddnn export --switchable`?") from None
    text = backend.metadata()
    beside = Path(str(path) + ".json")
    if text is None and beside.is_file():
        text = beside.read_text()
    if text is None:
        raise SwitchableError(f"{path} has no ddnn metadata and no {beside.name} beside it; "
                              "is it a file written by `ddnn export --switchable`?")
    try:
        info = json.loads(text)
    except json.JSONDecodeError as err:
        raise SwitchableError(f"the ddnn metadata of {path} is not valid JSON ({err.msg})") from None
    model = SwitchableModel(backend, info, clock)
    if calibrate:
        model.calibrate(batch_sizes)
    return model
