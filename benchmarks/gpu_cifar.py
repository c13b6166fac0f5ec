"""CIFAR-10 on a GPU in under 5 minutes: training throughput, memory and top-1 per net, with AMP.

    python benchmarks/gpu_cifar.py --data-root DIR [--epochs 10] [--out runs/gpu-cifar]

DIR holds CIFAR-10 as class folders or archives (train/ + test/, e.g. train.tar.gz + test.tar.gz).
Two parts, both on `--device` (default cuda) with runtime.precision=auto (bf16 autocast where the GPU
supports it, else fp16 with a gradient scaler) and channels_last:
1. throughput: images/s of full training steps (every net's forward, one backward, one SGD step) and
   the peak GPU memory, for DDNN ResNet-20 holding 14/8 and the paper's ResNet-56 holding 44/32/20;
2. a real run: `ekd/cifar10-jpeg-cpu` on all 49,000 training images for --epochs epochs, EKD and each
   depth trained alone, test top-1 per net on the 10,000 test images and the training time.
It prints a Markdown block for benchmarks/RESULTS.md and writes it with the numbers as JSON to --out.
`--device cpu --epochs 1 --train-limit 500` checks the script itself on a machine without a GPU.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from ddnn.config import load_config
from ddnn.experiments import train
from throughput import images_per_second

CASES = {"ekd resnet20 (20/14/8), ekd/cifar10-jpeg-cpu": "ekd/cifar10-jpeg-cpu",
         "ekd-paper resnet56 (56/44/32/20), ekd/cifar10-jpeg-resnet56": "ekd/cifar10-jpeg-resnet56"}


def throughput(device: str, batch: int, steps: int, data_root: str) -> dict[str, dict]:
    rows = {}
    for name, config in CASES.items():
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        rate = images_per_second([f"runtime.device={device}", f"data.root={data_root}"], steps, batch,
                                 (3, 32, 32), config)
        peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
        rows[name] = {"images_per_s": rate, "peak_gpu_bytes": peak, "batch": batch}
    return rows


def real_runs(args) -> dict[str, dict]:
    runs = {}
    for method in ("ekd", "individual"):
        overrides = [f"data.root={args.data_root}", f"runtime.device={args.device}", f"train.epochs={args.epochs}",
                     f"method={method}", "runtime.progress=false", f"name=gpu-cifar-{method}"]
        if args.train_limit:
            overrides.append(f"data.train_limit={args.train_limit}")
        t0 = time.perf_counter()
        results = train(load_config("ekd/cifar10-jpeg-cpu", overrides), Path(args.out) / method, resume=True)
        runs[method] = {"nets": {n: v["top1"] for n, v in results["nets"].items()},
                        "train_seconds": results["train_seconds"], "wall_seconds": time.perf_counter() - t0,
                        "precision": results["precision"], "train_size": results["train_size"]}
    return runs


def markdown(device_name: str, rates: dict, runs: dict, args) -> str:
    lines = [f"Device: {device_name}; torch {torch.__version__}; command: `python benchmarks/gpu_cifar.py "
             f"--data-root DIR --epochs {args.epochs}`", "", "| case (batch %d) | images/s | peak GPU memory |" % args.batch,
             "|---|---|---|"]
    for name, r in rates.items():
        mem = "-" if r["peak_gpu_bytes"] is None else f"{r['peak_gpu_bytes'] / 2**20:.0f} MiB"
        lines.append(f"| {name} | {r['images_per_s']:.0f} | {mem} |")
    nets = list(next(iter(runs.values()))["nets"])
    lines += ["", "| method | " + " | ".join(nets) + " | train s |", "|---" * (len(nets) + 2) + "|"]
    for method, r in runs.items():
        lines.append(f"| {method} | " + " | ".join(f"{r['nets'][n]:.2f}" for n in nets) + f" | {r['train_seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-limit", type=int)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default="runs/gpu-cifar")
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    rates = throughput(args.device, args.batch, args.steps, args.data_root)
    runs = real_runs(args)
    text = markdown(name, rates, runs, args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_cifar.md").write_text(text + "\n")
    (Path(args.out) / "gpu_cifar.json").write_text(json.dumps({"device": name, "throughput": rates, "runs": runs}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
