"""What training costs, as ratios measured side by side in one run.

    python benchmarks/cost.py [--images 1024] [--rounds 5]

Every case runs whole training epochs of ddnn's own loop (`Trainer.train_epoch`: batching and
augmentation, forward, backward, SGD step, loss bookkeeping) on the first --images MNIST-5k training
images with the default recipe; the cases take turns within each round and the median epoch time per
case is used, so drift of a shared machine hits all cases alike.

  ekd          the default run: DDNN ResNet-32 holding 20/14/8, EKD, bf16 + channels_last
  ce           the same DDNN, cross-entropy only (method=ddnn)
  alone:<net>  each depth trained on its own (four trainers; their epoch times are summed)
  full-ddnn    ddnn's loop training the full ResNet-32 alone
  full-hand    a minimal hand-written loop training the same ResNet-32 (plain nn.Sequential from
               `extract`), same batches, optimizer, schedule, precision and memory format
  ekd-fp32     the default run in fp32 without channels_last
  ekd-paper    the paper's EKD (attention maps on every stage, T = 3, shared classifier): what the
               attention term costs (the maps are computed in fp32 from the bf16 features)

Peak memory: each of `ekd` and `ekd-fp32` in a fresh subprocess, the peak resident set (VmHWM, reset
after set-up) over 8 training steps, and its growth over the resident set after set-up. (ru_maxrss
would not do: Linux carries it over from the parent process across fork and exec.)
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ddnn.config import load_config
from ddnn.data import batches
from ddnn.engine.schedule import make_optimizer, make_scheduler
from ddnn.engine.trainer import Trainer

CASES = {
    "ekd": [],
    "ce": ["method=ddnn"],
    "alone:resnet32": ["method=individual", "model.subnets=[]"],
    "alone:resnet20": ["method=individual", "model.name=resnet20", "model.subnets=[]"],
    "alone:resnet14": ["method=individual", "model.name=resnet14", "model.subnets=[]"],
    "alone:resnet8": ["method=individual", "model.name=resnet8", "model.subnets=[]"],
    "full-ddnn": ["method=ddnn", "model.subnets=[]"],
    "ekd-fp32": ["runtime.precision=fp32", "runtime.channels_last=false"],
    "ekd-paper": ["method=ekd-paper"],
}


def make_trainer(overrides: list[str], images: int, folder: Path) -> Trainer:
    cfg = load_config("mnist5k-resnet32", [f"data.train_limit={images}", "runtime.progress=false", *overrides])
    return Trainer(cfg, folder, log=lambda *_: None)


class HandLoop:
    """The same full net as a plain module, trained by the shortest loop that does the same work."""

    def __init__(self, trainer: Trainer) -> None:
        self.t = trainer
        rt = trainer.runtime
        self.net = rt.prepare(trainer.method.extract(next(iter(trainer.method.nets())))).train()
        self.opt = make_optimizer(self.net.parameters(), trainer.cfg.optim)
        self.sched = make_scheduler(self.opt, trainer.cfg.schedule, trainer.cfg.train.epochs, trainer.steps_per_epoch)

    def train_epoch(self, epoch: int) -> None:
        t, rt = self.t, self.t.runtime
        for x, y in batches(t.data.train, t.cfg.data.batch_size, t.normalize, shuffle_seed=epoch,
                            augment=t.cfg.data.augment, crop_padding=t.cfg.data.crop_padding):
            x, y = rt.to_input(x), y.to(rt.device)
            with rt.autocast():
                loss = F.cross_entropy(self.net(x), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_memory(case: str, images: int) -> dict:
    """Run in a fresh process: the peak resident set over 8 training steps of `case`, and its
    growth over the set-up (the kernel's high-water mark is reset after set-up via clear_refs)."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(CASES[case], images, Path(tmp) / "run")
        before = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        steps = 0
        trainer.method.train()
        for x, y in batches(trainer.data.train, trainer.cfg.data.batch_size, trainer.normalize, shuffle_seed=0):
            x, y = trainer.runtime.to_input(x), y.to(trainer.runtime.device)
            with trainer.runtime.autocast():
                losses, _ = trainer.method.forward_train(x, y)
            trainer.optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            trainer.optimizer.step()
            steps += 1
            if steps == 8:
                break
        after = _status_kib("VmHWM")
    return {"case": case, "setup_kib": before, "peak_kib": after, "growth_kib": after - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="training images per measured epoch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)  # internal: one subprocess per case
    args = parser.parse_args()
    if args.memory_case:
        print(json.dumps(peak_memory(args.memory_case, args.images)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: make_trainer(o, args.images, Path(tmp) / name.replace(":", "-")) for name, o in CASES.items()}
        hand = HandLoop(trainers["full-ddnn"])
        loops = {**{name: t.train_epoch for name, t in trainers.items()}, "full-hand": hand.train_epoch}
        times: dict[str, list[float]] = {name: [] for name in loops}
        for r in range(args.rounds + 1):  # round 0 warms up (first-call allocations, oneDNN kernels)
            for name, epoch_fn in loops.items():
                start = time.perf_counter()
                epoch_fn(1 + r % 2)
                if r > 0:
                    times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(v) for name, v in times.items()}
    alone = sum(med[f"alone:{n}"] for n in ("resnet32", "resnet20", "resnet14", "resnet8"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} images/epoch, "
          f"median of {args.rounds} rounds")
    print("| case | epoch s (median) |")
    print("|---|---|")
    for name, v in med.items():
        print(f"| {name} | {v:.3f} |")
    print()
    rows = [
        ("EKD epoch / CE-only DDNN epoch", med["ekd"] / med["ce"], "<= 1.03"),
        ("EKD epoch / sum of the four depths' epochs alone", med["ekd"] / alone, "<= 1.0"),
        ("ddnn loop throughput / hand-written loop (full net alone)", med["full-hand"] / med["full-ddnn"], ">= 0.95"),
        ("fast path (bf16 + channels_last) speed-up over fp32 (EKD)", med["ekd-fp32"] / med["ekd"], "-"),
        ("paper's EKD (attention on) epoch / CE-only DDNN epoch", med["ekd-paper"] / med["ce"], "-"),
    ]
    mem = {case: json.loads(subprocess.run([sys.executable, __file__, "--memory-case", case,
                                            "--images", str(args.images)], capture_output=True, text=True,
                                           check=True).stdout) for case in ("ekd", "ekd-fp32")}
    print("| ratio | value | target |")
    print("|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value:.3f} | {target} |")
    print()
    print("| case | peak RSS MiB | growth over set-up MiB (8 steps) |")
    print("|---|---|---|")
    for case, m in mem.items():
        print(f"| {case} | {m['peak_kib'] / 1024:.0f} | {m['growth_kib'] / 1024:.0f} |")


if __name__ == "__main__":
    main()
