"""`ddnn serve`: open a switchable file (or a run folder's), build the policy, run the app on uvicorn.

uvicorn owns the sockets and the signals: on SIGTERM or Ctrl-C it stops accepting connections,
lets every request already received finish, and only then ends the app's lifespan, which drains the
batch queue and stops the worker. The model runs through ddnn.runtime
(onnxruntime for an ONNX file); only exporting a run folder's file needs the training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import uvicorn

from ddnn import run_files, runtime
from ddnn.deploy.serve.app import Limits, create_app
from ddnn.deploy.serve.policy import FixedDepth, LatencyTarget, most_accurate
from ddnn.errors import DdnnError


@dataclass(frozen=True)
class ServeOptions:
    source: Path  # a switchable file, or a run folder
    host: str = "127.0.0.1"
    port: int = 8000
    depth: str | None = None  # fixed depth (index or name); with neither this nor p99_ms, the most accurate
    p99_ms: float | None = None  # latency target
    headroom: float = 0.8
    max_batch: int = 8
    limits: Limits = Limits()
    threads: int = 0  # onnxruntime / torch threads; 0: the runtime's own default
    which: str = "best"  # a run folder's checkpoint
    graceful_s: float = 30.0  # at shutdown, how long requests in flight may take


def switchable_of_run(folder: Path, which: str) -> Path:
    """RUN/export/<full net>-switchable.onnx, exported first (as `ddnn export --switchable --format onnx`)
    when missing or older than the checkpoint."""
    from ddnn.engine.run_folder import checkpoint_of

    checkpoint = checkpoint_of(folder, which)
    found = sorted((folder / run_files.EXPORT).glob("*-switchable.onnx"))
    if len(found) == 1 and found[0].stat().st_mtime >= checkpoint.stat().st_mtime:
        return found[0]
    from ddnn.deploy.commands import export_switchable_files
    from ddnn.deploy.run import open_run

    print(f"{folder}: exporting its switchable ONNX file first ({checkpoint.name})", flush=True)
    run = open_run(folder, which)
    return export_switchable_files(run, run.load_data(), ["onnx"])["onnx"]


def open_model(options: ServeOptions) -> tuple[runtime.SwitchableModel, Path]:
    source = Path(options.source)
    path = switchable_of_run(source, options.which) if source.is_dir() else source
    sizes = sorted({1, max(1, options.max_batch // 2), options.max_batch})
    try:
        return runtime.load(path, threads=options.threads or None, batch_sizes=sizes), path
    except runtime.SwitchableError as err:
        raise DdnnError(f"cannot serve {path}: {err}") from None


def make_policy(model: runtime.SwitchableModel, options: ServeOptions):
    if options.depth is not None and options.p99_ms is not None:
        raise DdnnError("give --depth (a fixed depth) or --p99-ms (a latency target), not both")
    if options.p99_ms is not None:
        try:
            return LatencyTarget(options.p99_ms, options.headroom)
        except ValueError as err:
            raise DdnnError(f"--p99-ms/--headroom: {err}") from None
    if options.depth is None:
        return FixedDepth(most_accurate(model.depths))
    try:
        return FixedDepth(model.depth(int(options.depth) if options.depth.isdigit() else options.depth))
    except runtime.SwitchableError as err:
        raise DdnnError(f"--depth {options.depth}: {err}") from None


def serve(options: ServeOptions) -> int:
    if options.max_batch < 1 or options.limits.max_images < 1 or options.limits.max_body_bytes < 1:
        raise DdnnError("--max-batch, --max-images and --max-body-kib must be >= 1")
    model, path = open_model(options)
    policy = make_policy(model, options)
    app = create_app(model, policy, options.max_batch, options.limits, path.name)
    print(f"serving {path} ({len(model.depths)} depths: "
          + ", ".join(f"{d.index}={d.name} {model.expected_ms(d.index, 1):.2f} ms" for d in model.depths)
          + f" at batch 1 here), policy: {policy.describe()}, batches of up to {options.max_batch}, "
          f"on http://{options.host}:{options.port}", flush=True)
    uvicorn.run(app, host=options.host, port=options.port, log_level="info", access_log=False,
                timeout_graceful_shutdown=options.graceful_s)
    return 0
