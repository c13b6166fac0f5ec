"""Where one training epoch of a config spends its time: data and augmentation, forward and backward
of every net, the optimizer, the per-epoch evaluation and the checkpoint writes.

    python benchmarks/epoch_profile.py [-c CONFIG] [key=value ...] [--epochs 2] [--clock wall|cpu]

On a shared machine, profile one thread with `--clock cpu runtime.threads=1`: the parts are then
this process's CPU time, which other jobs barely change (wall time with two threads on two busy
cores can be several times the quiet time: each thread waits for the other at every barrier).

Each part is timed on its own with the run's real objects (dataset, method, optimizer, runtime), in
the order the trainer runs them; the first epoch is warm-up (oneDNN picks its kernels then), the rest
are averaged. Per net, the forward pass and the backward pass of that net's own loss terms are timed
separately, so their sum is close to, not exactly, the one backward the trainer runs. To see a CPU
without native bf16 on one that has it, run with ONEDNN_MAX_CPU_ISA=AVX512_CORE (oneDNN then uses
plain AVX-512, and ddnn's `runtime.precision=auto` picks fp32, as it would there).
"""

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from ddnn.config import load_config
from ddnn.data import Normalizer, batches, num_batches
from ddnn.checkpoint import save_checkpoint
from ddnn.engine.evaluate import evaluate
from ddnn.engine.runtime import resolve_runtime
from ddnn.engine.schedule import make_optimizer
from ddnn.engine.setup import build_method, load_data

CLOCK = time.perf_counter  # --clock cpu: time.process_time, the CPU time of this process


def profile_epoch(cfg, epochs: int) -> tuple[dict[str, float], dict]:
    """Seconds per part of one epoch (mean over the epochs after the first) and the run's facts."""
    torch.manual_seed(cfg.train.seed)
    runtime = resolve_runtime(cfg.runtime)
    data, spec = load_data(cfg)
    method = runtime.prepare(build_method(cfg, spec)).train()
    optimizer = make_optimizer(method.parameter_groups(cfg.optim.weight_decay), cfg.optim)
    normalize = Normalizer(spec.mean, spec.std)
    nets = method.nets()
    per_epoch: list[dict[str, float]] = []
    folder = Path(tempfile.mkdtemp(prefix="epoch-profile-"))
    for epoch in range(1, epochs + 1):
        t: dict[str, float] = defaultdict(float)
        method.train()
        stream = batches(data.train, cfg.data.batch_size, normalize, shuffle_seed=epoch, augment=cfg.data.augment,
                         crop_padding=cfg.data.crop_padding)
        while True:
            start = CLOCK()
            batch = next(stream, None)
            t["data + augmentation"] += CLOCK() - start
            if batch is None:
                break
            x, y = runtime.to_input(batch[0]), batch[1].to(runtime.device)
            optimizer.zero_grad(set_to_none=True)
            with runtime.autocast():
                start = CLOCK()
                losses, _ = method.forward_train(x, y)
                t["forward, all nets (the method's step)"] += CLOCK() - start
            start = CLOCK()
            sum(losses.values()).backward()
            t["backward"] += CLOCK() - start
            start = CLOCK()
            optimizer.step()
            t["optimizer step"] += CLOCK() - start
        split = data.val if data.val is not None else data.test
        start = CLOCK()
        evaluate(method, split, normalize, runtime, cfg.data.eval_batch_size)
        t[f"evaluation ({len(split)} images x {len(nets)} nets)"] += CLOCK() - start
        start = CLOCK()
        state = {"state": method.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
        save_checkpoint(state, folder / "last.pt")
        save_checkpoint(state, folder / "best.pt")
        t["checkpoints (best.pt + last.pt)"] += CLOCK() - start
        per_epoch.append(dict(t))
    timed = per_epoch[1:] or per_epoch
    parts = {k: statistics.mean(e[k] for e in timed) for k in timed[0]}
    facts = {"precision": runtime.precision, "channels_last": runtime.channels_last, "threads": torch.get_num_threads(),
             "train_images": len(data.train), "steps": num_batches(data.train, cfg.data.batch_size),
             "nets": list(nets)}
    return parts, facts


def per_net(cfg, steps: int = 8) -> dict[str, dict[str, float]]:
    """Forward and backward seconds per step of each net alone (its CE on a training batch)."""
    torch.manual_seed(0)
    runtime = resolve_runtime(cfg.runtime)
    data, spec = load_data(cfg)
    method = runtime.prepare(build_method(cfg, spec)).train()
    x = runtime.to_input(Normalizer(spec.mean, spec.std)(data.train.images[: cfg.data.batch_size]))
    y = data.train.labels[: cfg.data.batch_size].to(runtime.device)
    out = {}
    for name in method.nets():
        fwd, bwd = [], []
        for i in range(steps + 2):
            with runtime.autocast():
                start = CLOCK()
                loss = torch.nn.functional.cross_entropy(method.predict(x, name), y)
                mid = CLOCK()
            loss.backward()
            end = CLOCK()
            if i >= 2:
                fwd.append(mid - start)
                bwd.append(end - mid)
        out[name] = {"forward": statistics.median(fwd), "backward": statistics.median(bwd)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: this process's CPU time, which other jobs on a shared machine barely change; "
                             "use it with runtime.threads=1, where CPU time is the time the work takes")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    cfg = load_config(args.config, ["runtime.progress=false", *args.overrides])
    parts, facts = profile_epoch(cfg, args.epochs)
    total = sum(parts.values())
    print(f"{cfg.name}: {facts['train_images']} images, {facts['steps']} steps of {cfg.data.batch_size}, nets "
          f"{', '.join(facts['nets'])}; {facts['precision']}{' channels_last' if facts['channels_last'] else ''}, "
          f"{facts['threads']} threads, {args.clock} clock; one epoch {total:.2f} s (x {cfg.train.epochs} epochs = {total * cfg.train.epochs:.0f} s)")
    print("| part | s per epoch | share |\n|---|---|---|")
    for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.2f} | {100 * v / total:.1f} % |")
    nets = per_net(cfg)
    print("\n| net (one step alone) | forward ms | backward ms |\n|---|---|---|")
    for name, r in nets.items():
        print(f"| {name} | {1000 * r['forward']:.1f} | {1000 * r['backward']:.1f} |")


if __name__ == "__main__":
    main()
