"""The training loop. It never knows which method it runs: it sums the named loss terms, steps the
optimizer, logs each term by name, and writes the run-output contract (DESIGN.md). Under torchrun it
trains one slice of every global batch per process (engine/distributed.py); with `resume` it
continues a run from its last checkpoint (engine/resume.py)."""

import contextlib
import dataclasses
import json
import math
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from ddnn.config import Config, to_dict
from ddnn.data import Dataset, Normalizer, batches, num_batches
from ddnn.deploy.cost import MACS_NOTE, count_macs, count_params
from ddnn.engine.checkpoint import load_checkpoint, previous_of, save_checkpoint
from ddnn.engine.distributed import World, average_gradients, join_world
from ddnn.engine.evaluate import evaluate
from ddnn.engine.resume import (can_start_fresh, checkpoint_config, clean_partial_writes, find_last, rng_state,
                               set_rng_state)
from ddnn.engine.runtime import Runtime, resolve_runtime
from ddnn.engine.schedule import make_optimizer, make_scheduler
from ddnn.engine.setup import InputSpec, build_method, check_config, load_data
from ddnn.engine.summary import format_table
from ddnn.errors import DdnnError
from ddnn.methods import Method


def print_line(line: str) -> None:
    """The default log: flushed, so progress shows in pipes and log files."""
    print(line, flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_out_dir(out: Path) -> None:
    """Refuse a run folder that already holds something (a previous run is never overwritten)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DdnnError(f"run folder {out} already exists and is not empty; choose another --out or remove it")


def make_run_folder(out: Path) -> Path:
    """Create the run folder (after every input check passed, so bad input leaves nothing behind)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DdnnError(f"cannot create run folder {out}: {err.strerror}; choose a writable --out") from None
    return out


def net_costs(method: Method, spec: InputSpec) -> dict[str, dict]:
    """Blocks, parameters and MACs of every net, measured on its extracted standalone form."""
    costs = {}
    for name, sub in method.nets().items():
        net = method.extract(name).float().cpu().to(memory_format=torch.contiguous_format)
        costs[name] = {"blocks": list(sub.blocks), "params": count_params(net), "macs": count_macs(net, spec.shape)}
    return costs


def resolve_distributed(cfg: Config, world: World) -> Config:
    """`cfg` with the launch written in: processes, each one's share of the global batch, the LR used."""
    d = cfg.distributed
    if cfg.data.batch_size < world.size:
        raise DdnnError(f"data.batch_size {cfg.data.batch_size} is the global batch and must be at least the "
                        f"number of processes ({world.size})")
    lr = cfg.optim.lr * (cfg.data.batch_size / d.reference_batch if d.lr_scaling == "linear" else 1.0)
    per_rank = -(-cfg.data.batch_size // world.size)
    return dataclasses.replace(cfg, distributed=dataclasses.replace(d, world_size=world.size, per_rank_batch=per_rank, lr=lr))


def _tensorboard_writer_class():
    """torch's SummaryWriter, or a one-line error naming the extra to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DdnnError("runtime.tensorboard=true needs the tensorboard package: pip install 'ddnn[tensorboard]'") from None
    return SummaryWriter


class Trainer:
    """Trains `cfg` into the run folder `out`; `fit()` returns the results.json content."""

    def __init__(self, cfg: Config, out: Path, log=None, resume: dict | None = None, restart: bool = False) -> None:
        """`resume`: a checkpoint of this run folder to continue from (its config is `cfg`); `restart`:
        start afresh in a folder holding only what a run killed before its first checkpoint wrote."""
        check_config(cfg)
        self.out = Path(out)
        self.runtime: Runtime = resolve_runtime(cfg.runtime)
        self.world: World = join_world(self.runtime.device)
        if self.world.distributed and self.runtime.device.type == "cuda":
            self.runtime = dataclasses.replace(self.runtime, device=torch.device("cuda", self.world.local_rank))
            torch.cuda.set_device(self.runtime.device)
        say = log or print_line
        self.log = say if self.world.is_main else (lambda line: None)
        if resume is None and not (restart and can_start_fresh(self.out)):
            check_out_dir(self.out)
        tensorboard = _tensorboard_writer_class() if cfg.runtime.tensorboard and self.world.is_main else None
        seed_everything(cfg.train.seed)
        self.data, self.spec = load_data(cfg)
        self.cfg = cfg = resolve_distributed(cfg, self.world)
        method = build_method(cfg, self.spec)
        method.prepare_training(cfg, self.data, self.spec, self.runtime, self.log)  # e.g. kd's teachers
        self.init_sha256 = None
        if cfg.model.init_from and resume is None:
            from ddnn.models.pretrained import apply_init_from

            self.init_sha256 = apply_init_from(method, Path(cfg.model.init_from).expanduser(), self.log)
        self.method = self.runtime.prepare(method)
        self.model = self.method
        if self.world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.runtime.device.index] if self.runtime.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.method, device_ids=ids,
                                                 find_unused_parameters=not self.method.uses_every_parameter)
        self.normalize = Normalizer(self.spec.mean, self.spec.std)
        self.steps_per_epoch = num_batches(self.data.train, cfg.data.batch_size)
        self.optimizer = make_optimizer(self.method.parameter_groups(cfg.optim.weight_decay),
                                        dataclasses.replace(cfg.optim, lr=cfg.distributed.lr))
        self.scheduler = make_scheduler(self.optimizer, cfg.schedule, cfg.train.epochs, self.steps_per_epoch)
        self.scaler = self.runtime.grad_scaler()
        self.select_split = "val" if self.data.val is not None else "test"
        self.epoch, self.best_score, self.best_epoch, self.history = 0, -math.inf, 0, []
        if resume is not None:
            self._restore(resume)
        self.world.barrier()  # every process has checked the folder before the first one writes to it
        if self.world.is_main:
            if resume is None:
                make_run_folder(self.out)
            clean_partial_writes(self.out)
            (self.out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
            with open(self.out / "metrics.jsonl", "w") as fh:  # the checkpoint's history is the truth
                fh.writelines(json.dumps(r) + "\n" for r in self.history)
        self.tensorboard = tensorboard(str(self.out / "tensorboard")) if tensorboard else None

    def _restore(self, ckpt: dict) -> None:
        """Load a checkpoint's training state; a checkpoint of another model is a one-line error."""
        try:
            self.method.load_state_dict(ckpt["state"])
        except RuntimeError as err:
            raise DdnnError(f"the checkpoint in {self.out} does not fit the model its config builds "
                            f"({str(err).splitlines()[0][:160]}); was it written by another ddnn version?") from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.best_score = int(ckpt["epoch"]), float(ckpt["best_score"])
        self.init_sha256 = ckpt.get("init_sha256")
        self.best_epoch, self.history = int(ckpt["best_epoch"]), list(ckpt["history"])
        set_rng_state(ckpt["rng"])
        saved_world = ckpt["config"]["distributed"]["world_size"]
        if saved_world != self.world.size:
            self.log(f"ddnn: resuming a run started with {saved_world} process(es) on {self.world.size}: "
                     "the batches are the same, BatchNorm sees other per-process slices")
        self.log(f"ddnn: resuming {self.out} after epoch {self.epoch}/{self.cfg.train.epochs}")

    # -- one epoch ---------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict:
        cfg, rt = self.cfg, self.runtime
        self.method.train()
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=rt.device))
        correct: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=rt.device))
        counted: dict[str, int] = defaultdict(int)  # per net: a method may run only some nets per step
        seen = 0
        show = sys.stderr.isatty() if cfg.runtime.progress == "auto" else cfg.runtime.progress
        stream = batches(self.data.train, cfg.data.batch_size, self.normalize,
                         shuffle_seed=cfg.train.seed * 100_003 + epoch, augment=cfg.data.augment,
                         crop_padding=cfg.data.crop_padding)
        bar = tqdm(stream, total=self.steps_per_epoch, desc=f"epoch {epoch}/{cfg.train.epochs}",
                   disable=not show, leave=False, dynamic_ncols=True)
        world = self.world
        for step, (x, y) in enumerate(bar):
            n_global = len(y)
            if world.distributed:
                if n_global < world.size:  # too few samples left to give every process one
                    continue
                part = world.slice(n_global)
                x, y = x[part], y[part]
            x, y = rt.to_input(x), y.to(rt.device)
            self.method.progress = epoch - 1 + step / self.steps_per_epoch
            self.optimizer.zero_grad(set_to_none=True)
            with self._gradient_sync():
                with rt.autocast():
                    losses, logits = self.model(x, y)
                self._check_finite(losses, sum(losses.values()), epoch, step)
                # DDP averages over processes: weigh each slice's loss by its share of the global batch
                weight = len(y) * world.size / n_global if world.distributed else 1.0
                weighted = {k: v * weight for k, v in losses.items()} if weight != 1.0 else losses
                self.method.backward(weighted, self.scaler.scale, epoch)  # kd clips its Gram gradient
            if self.sync_by_hand:
                average_gradients(self.method, world)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            for k, v in losses.items():
                sums[k] += v.detach().float() * len(y)
            for name, z in logits.items():
                correct[name] += (z.detach().argmax(1) == y).sum()
                counted[name] += len(y)
            seen += len(y)
        n_sums, n_nets = len(sums), len(correct)
        totals = world.sum(torch.stack([*sums.values(), *correct.values(),
                                        *(torch.tensor(float(counted[k]), device=rt.device) for k in correct),
                                        torch.tensor(float(seen), device=rt.device)]).float()).tolist()
        seen_all = totals[-1]
        return {"lr": lr, "losses": {k: totals[i] / seen_all for i, k in enumerate(sums)},
                "train_top1": {k: 100.0 * totals[n_sums + i] / totals[n_sums + n_nets + i]
                               for i, k in enumerate(correct)}}

    @property
    def sync_by_hand(self) -> bool:
        """A method with its own backward (several autograd passes) has its gradients averaged after
        it, as DDP's hooks would sum one pass only."""
        return self.world.distributed and type(self.method).backward is not Method.backward

    def _gradient_sync(self):
        return self.model.no_sync() if self.sync_by_hand else contextlib.nullcontext()

    def _check_finite(self, losses: dict[str, torch.Tensor], total: torch.Tensor, epoch: int, step: int) -> None:
        """Stop on a NaN/Inf loss (in any process), naming the step and the term; checkpoints stay as they are."""
        finite = torch.isfinite(total.detach()).float().reshape(1)
        if self.world.distributed:
            finite = self.world.sum(finite) / self.world.size
        if finite.item() < 1:
            bad = [k for k, v in losses.items() if not torch.isfinite(v)] or ["in another process"]
            raise DdnnError(f"loss became non-finite at epoch {epoch}, step {step} (term(s): {', '.join(bad)}); "
                            "lower optim.lr or use runtime.precision=fp32; last.pt holds the last good epoch")

    def _evaluate(self, split_name: str, world: World | None = None) -> dict[str, float]:
        """Top-1 per net; with `world`, each process evaluates its share and the counts are summed."""
        split = self.data.val if split_name == "val" else self.data.test
        return evaluate(self.method, split, self.normalize, self.runtime, self.cfg.data.eval_batch_size, world)

    def _score(self, top1: dict[str, float]) -> float:
        if self.cfg.train.select == "full":
            return top1[next(iter(top1))]
        return sum(top1.values()) / len(top1)

    def _checkpoint(self) -> dict:
        return {
            "config": to_dict(self.cfg), "input": self.spec.to_dict(), "epoch": self.epoch,
            "state": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "best_score": self.best_score, "best_epoch": self.best_epoch, "history": self.history, "rng": rng_state(),
            "init_sha256": self.init_sha256,
        }

    # -- the whole run -----------------------------------------------------------------------
    def fit(self) -> dict:
        cfg = self.cfg
        world = f" | {self.world.size} processes ({self.world.backend})" if self.world.distributed else ""
        self.log(f"ddnn: {cfg.method.name} | {cfg.model.name} {list(self.method.nets())} | {cfg.data.name} "
                 f"({len(self.data.train)} train) | {cfg.train.epochs} epochs | {self.runtime.device} "
                 f"{self.runtime.precision}{' channels_last' if self.runtime.channels_last else ''}{world} | -> {self.out}")
        for epoch in range(self.epoch + 1, cfg.train.epochs + 1):
            t0 = time.perf_counter()
            record = {"epoch": epoch, **self.train_epoch(epoch)}  # lr: the epoch's last step
            record[f"{self.select_split}_top1"] = evaluated = self._evaluate(self.select_split, self.world)
            record["seconds"] = round(time.perf_counter() - t0, 3)
            self.epoch = epoch
            self.history.append(record)
            score = self._score(evaluated)
            improved = score > self.best_score
            if improved:
                self.best_score, self.best_epoch = score, epoch
            if self.world.is_main:
                ckpt = self._checkpoint()  # one snapshot for both files
                if improved:
                    save_checkpoint(ckpt, self.out / "best.pt")
                save_checkpoint(ckpt, self.out / "last.pt")
                with open(self.out / "metrics.jsonl", "a") as metrics:
                    metrics.write(json.dumps(record) + "\n")
                self._log_epoch(record, evaluated)
        seconds = sum(r["seconds"] for r in self.history)
        results = self.finish(self.best_epoch, seconds) if self.world.is_main else {}
        self.world.barrier()  # the other processes wait for the final evaluation before they exit
        return results

    def _log_epoch(self, record: dict, evaluated: dict[str, float]) -> None:
        epochs = self.cfg.train.epochs
        accs = " ".join(f"{k} {v:.2f}" for k, v in evaluated.items())
        loss = sum(record["losses"].values())
        self.log(f"epoch {record['epoch']:>3}/{epochs} lr {record['lr']:.4f} loss {loss:.4f} | "
                 f"{self.select_split} top1: {accs} | {record['seconds']:.1f}s")
        if self.tensorboard is not None:
            step = record["epoch"]
            self.tensorboard.add_scalar("lr", record["lr"], step)
            for k, v in record["losses"].items():
                self.tensorboard.add_scalar(f"loss/{k}", v, step)
            for k, v in record["train_top1"].items():
                self.tensorboard.add_scalar(f"train_top1/{k}", v, step)
            for k, v in evaluated.items():
                self.tensorboard.add_scalar(f"{self.select_split}_top1/{k}", v, step)
            self.tensorboard.flush()

    def finish(self, best_epoch: int, seconds: float) -> dict:
        """Test top-1 of the final weights and of best.pt, costs per net; writes results.json."""
        final = self._evaluate("test")
        val = self._evaluate("val") if self.data.val is not None else None
        final_state = {k: v.clone() for k, v in self.method.state_dict().items()}
        best = load_checkpoint(self.out / "best.pt")
        self.method.load_state_dict(best["state"])
        best_test = self._evaluate("test")
        best_val = self._evaluate("val") if self.data.val is not None else None
        self.method.load_state_dict(final_state)
        costs = net_costs(self.method, self.spec)
        results = {
            "method": self.cfg.method.name, "dataset": self.cfg.data.name, "model": self.cfg.model.name,
            "epochs": self.cfg.train.epochs, "seed": self.cfg.train.seed, "split": "test",
            "selected_on": self.select_split, "best_epoch": best_epoch, "train_seconds": round(seconds, 2),
            "device": str(self.runtime.device), "precision": self.runtime.precision,
            "train_size": len(self.data.train), "test_size": len(self.data.test),
            "val_size": 0 if self.data.val is None else len(self.data.val),
            "macs_note": MACS_NOTE, "total_params": count_params(self.method),
            "processes": self.world.size,
            "init_from": None if self.init_sha256 is None else {"path": self.cfg.model.init_from,
                                                                 "sha256": self.init_sha256},
            "nets": {
                name: {**costs[name], "top1": final[name], "best_top1": best_test[name],
                       "val_top1": None if val is None else val[name]}
                for name in final
            },
        }
        results.update(self.method.extra_results(  # e.g. online: the best student of each checkpoint
            {"top1": final, "val_top1": val, "best_top1": best_test, "best_val_top1": best_val}, self.spec.shape))
        (self.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        for name in ("best.pt", "last.pt"):  # the run is complete: the copies kept for a crash are not needed
            previous_of(self.out / name).unlink(missing_ok=True)
        if self.tensorboard is not None:
            self.tensorboard.close()
        self.log(format_table(results))
        self.log(f"trained in {seconds:.1f}s; run folder: {self.out}")
        return results


def train(cfg: Config | None, out: Path, log=None, resume: bool = False) -> dict:
    """Train `cfg` into `out`: results.json's content, or with `cfg.seeds` one run per seed under
    `out` and the report's summary of them.

    `resume`: continue the run in `out` from its last checkpoint if it has one, else start it there;
    `cfg` must then agree with the run's own config (None: use the run's own config)."""
    from ddnn.engine.seeds import SEEDS_CONFIG, train_seeds

    if cfg is None and (Path(out) / SEEDS_CONFIG).is_file():
        from ddnn.config import saved_config

        cfg = saved_config(yaml.safe_load((Path(out) / SEEDS_CONFIG).read_text()))
    if cfg is not None and cfg.seeds:
        return train_seeds(cfg, out, log, resume)
    if not resume:
        return Trainer(cfg, out, log).fit()
    say = log or print_line
    ckpt = find_last(Path(out), say)
    if ckpt is None:
        if cfg is None:
            raise DdnnError(f"{out} holds no last.pt to resume; start the run with: ddnn train --out {out}")
        return Trainer(cfg, out, log, restart=True).fit()
    cfg = checkpoint_config(ckpt, cfg, Path(out))
    results = Path(out) / "results.json"
    if ckpt["epoch"] >= cfg.train.epochs and results.is_file():
        say(f"ddnn: {out} already finished its {cfg.train.epochs} epochs; nothing to resume")
        return json.loads(results.read_text())
    return Trainer(cfg, out, log, resume=ckpt).fit()
