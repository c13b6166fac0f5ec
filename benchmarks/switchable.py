"""One switchable file against one static file per depth: size, latency per depth, cost of switching.

For a trained DDNN run (--run DIR; without it the default run is trained, or resumed, in
runs/switchable-default) it writes, with ddnn's own verified export, every depth as a static file and
all depths as one switchable file, in TorchScript and ONNX, into --out, then measures:

- size: the switchable file against the sum of the static files and against the full net's file alone;
- latency per depth at each batch size: switchable (at that depth) over static, timed in turn in the same
  loop (`ddnn.deploy.latency.time_interleaved`), medians of --repeats calls per round; the ratio is the
  median over --rounds rounds (min-max beside it), in onnxruntime and in TorchScript;
- switching, at batch 1: in one loaded switchable file, the depths called in turn (0, 1, 2, ... call by
  call) against each depth called --repeats times in a row; the same for the static files (one loaded
  file per depth), the baseline: what calling other nets in between costs anyway (caches); and
  `ddnn.runtime` over a bare call of the same file (what the Python runtime adds).

Prints Markdown and writes switchable.json into --out.
Usage: python benchmarks/switchable.py [--run DIR] [--out DIR] [--threads 2] [--rounds 5] [--repeats 50] [--quick]
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from ddnn import run_files, runtime
from ddnn.deploy.export import SUFFIX, export_net
from ddnn.deploy.latency import time_interleaved
from ddnn.deploy.run import open_run
from ddnn.deploy.switchable import export_switchable, stem

FORMATS = ("onnx", "torchscript")


def trained_run(folder: Path) -> Path:
    """The default run in `folder`: trained, or continued where it stopped (ddnn's --resume auto)."""
    subprocess.run([sys.executable, "-m", "ddnn", "train", "--out", str(folder), "--resume", "auto"], check=True)
    return folder


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        flags = next((line for line in out.splitlines() if line.startswith("Flags")), "")
        name = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")
        extras = [f for f in ("avx512_bf16", "amx_bf16") if f in flags.split()]
        return f"{name} ({', '.join(extras)})" if extras else name
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def opened(path: Path, fmt: str, threads: int):
    """A callable (images ndarray, depth index or None for a static file) -> logits, on one loaded file."""
    if fmt == "onnx":
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda x, d=None: session.run(None, {"image": x} if d is None else
                                             {"image": x, "depth": np.array(d, dtype=np.int64)})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu")

    def call(x, d=None):
        with torch.no_grad():
            t = torch.from_numpy(x)
            return module(t) if d is None else module(t, d)  # the TorchScript file takes an int
    return call


def ratios(fns_per_round, rounds: int, warmup: int, repeats: int) -> tuple[list[float], float]:
    """(ratios of fns[1] over fns[0] per round, median ms of fns[0]) from interleaved timing."""
    out, base = [], []
    dummy = torch.zeros(1)
    for _ in range(rounds):
        static, switch = time_interleaved(fns_per_round, dummy, warmup, repeats)
        out.append(switch["median"] / static["median"])
        base.append(static["median"])
    return out, statistics.median(base)


def switching(calls, depths: int, x: np.ndarray, rounds: int, repeats: int) -> list[list[tuple[float, float]]]:
    """For each `call(x, depth)` and depth: (median ms when the depths are called in turn, call by call;
    median ms when that depth is called `repeats` times in a row). The calls take turns by round."""
    alternating = [[[] for _ in range(depths)] for _ in calls]
    repeated = [[[] for _ in range(depths)] for _ in calls]
    for call in calls:  # warm every depth up
        for d in range(depths):
            for _ in range(5):
                call(x, d)
    for _ in range(rounds):
        for k, call in enumerate(calls):
            for _ in range(repeats):
                for d in range(depths):
                    start = time.perf_counter()
                    call(x, d)
                    alternating[k][d].append(time.perf_counter() - start)
            for d in range(depths):
                for _ in range(repeats):
                    start = time.perf_counter()
                    call(x, d)
                    repeated[k][d].append(time.perf_counter() - start)
    return [[(statistics.median(a) * 1e3, statistics.median(r) * 1e3) for a, r in zip(alternating[k], repeated[k])]
            for k in range(len(calls))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained DDNN run folder (default: train/resume runs/switchable-default)")
    parser.add_argument("--out", help="where the files go (default RUN/export-bench)")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per file per round")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 5 calls: checks the script, measures nothing")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.repeats, args.warmup = 2, 5, 2
    torch.set_num_threads(args.threads)
    folder = Path(args.run) if args.run else trained_run(Path("runs/switchable-default"))
    out = Path(args.out) if args.out else folder / "export-bench"
    run = open_run(folder)
    data = run.load_data()
    images = data.test.images[:256]
    names = list(run.method.nets())
    # top-1 of best.pt as the run recorded it (the files' metadata; not what this measures)
    nets = json.loads((folder / run_files.RESULTS).read_text())["nets"]
    accuracy = {n: {"top1": nets[n]["best_top1"], "val_top1": nets[n].get("best_val_top1")} for n in names}

    files: dict[str, dict[str, Path]] = {fmt: {} for fmt in FORMATS}
    for fmt in FORMATS:
        for name in names:
            files[fmt][name] = out / f"{name}{SUFFIX[fmt]}"
            export_net(run, name, fmt, files[fmt][name], images)
        files[fmt]["switchable"] = out / f"{stem(run)}{SUFFIX[fmt]}"
        export_switchable(run, fmt, files[fmt]["switchable"], images, accuracy)

    report: dict = {"machine": cpu_name(), "torch": torch.__version__, "onnxruntime": ort.__version__,
                    "threads": args.threads, "rounds": args.rounds, "repeats": args.repeats, "warmup": args.warmup,
                    "run": str(folder), "date": time.strftime("%Y-%m-%d"), "size": {}, "latency": [], "switching": []}
    print(f"{report['machine']}; torch {torch.__version__}, onnxruntime {ort.__version__}, {args.threads} threads; "
          f"{args.rounds} rounds x {args.repeats} calls after {args.warmup} warm-up; run {folder}")
    print("\n| format | switchable | sum of the per-depth files | switchable / sum | full net's file | switchable / full |")
    print("|---|---|---|---|---|---|")
    for fmt in FORMATS:
        sw = files[fmt]["switchable"].stat().st_size
        total = sum(files[fmt][n].stat().st_size for n in names)
        full = files[fmt][names[0]].stat().st_size
        report["size"][fmt] = {"switchable": sw, "per_depth_sum": total, "full": full}
        print(f"| {fmt} | {sw / 2**20:.2f} MiB | {total / 2**20:.2f} MiB | {sw / total:.3f} | {full / 2**20:.2f} MiB | "
              f"{sw / full:.3f} |")

    print("\n| format | net | batch | static ms | switchable / static (median over rounds) | min-max |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for fmt in FORMATS:
        switch = opened(files[fmt]["switchable"], fmt, args.threads)
        for index, name in enumerate(names):
            static = opened(files[fmt][name], fmt, args.threads)
            for b in map(int, args.batch_sizes.split(",")):
                x = rng.random((b, *run.spec.shape), dtype=np.float32)
                rs, base = ratios([lambda _t: static(x), lambda _t: switch(x, index)], args.rounds, args.warmup,
                                  args.repeats)
                report["latency"].append({"format": fmt, "net": name, "batch": b, "static_ms": base, "ratios": rs})
                print(f"| {fmt} | {name} | {b} | {base:.3f} | {statistics.median(rs):.3f} | "
                      f"{min(rs):.3f}-{max(rs):.3f} |")

    print("\n| format | net | switchable: ms in turn with the other depths | ms repeated | in turn / repeated | "
          "static files: in turn / repeated | ddnn.runtime / bare call |")
    print("|---|---|---|---|---|---|---|")
    x1 = rng.random((1, *run.spec.shape), dtype=np.float32)
    for fmt in FORMATS:
        call = opened(files[fmt]["switchable"], fmt, args.threads)
        statics = [opened(files[fmt][n], fmt, args.threads) for n in names]
        loaded = runtime.load(files[fmt]["switchable"], calibrate=False, threads=args.threads)
        switch, static = switching([call, lambda x, d: statics[d](x)], len(names), x1, args.rounds, args.repeats)
        for index, name in enumerate(names):
            rs, _ = ratios([lambda _t: call(x1, index), lambda _t: loaded.run(x1, depth=index)], args.rounds,
                           args.warmup, args.repeats)
            (turn, same), (static_turn, static_same) = switch[index], static[index]
            report["switching"].append({"format": fmt, "net": name, "in_turn_ms": turn, "repeated_ms": same,
                                        "static_in_turn_ms": static_turn, "static_repeated_ms": static_same,
                                        "runtime_over_bare": rs})
            print(f"| {fmt} | {name} | {turn:.3f} | {same:.3f} | {turn / same:.3f} | {static_turn / static_same:.3f} | "
                  f"{statistics.median(rs):.3f} |")
    (out / "switchable.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {out / 'switchable.json'}")


if __name__ == "__main__":
    main()
