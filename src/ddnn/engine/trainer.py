"""The training loop. It never knows which method it runs: it sums the named loss terms, steps the
optimizer and logs each term by name; the run folder (engine/run_folder.py) holds what it writes.
Under torchrun it trains one slice of every global batch per process (engine/distributed.py); with
`resume` it continues a run from its last checkpoint (engine/resume.py)."""

import contextlib
import dataclasses
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from ddnn.config import Config, to_dict
from ddnn.data import Normalizer, batches, num_batches
from ddnn.engine.distributed import World, average_gradients
from ddnn.engine.evaluate import evaluate
from ddnn.engine.resume import checkpoint_config, rng_state, set_rng_state
from ddnn.engine.runtime import describe_choice
from ddnn.engine.run_folder import (RunFolder, can_start_fresh, check_belongs, check_out_dir, find_last,
                                   finished_results, new_run_id, only_a_failed_start)
from ddnn.engine.schedule import make_optimizer, make_scheduler
from ddnn.engine.setup import build_method, check_config, load_data, resolve_distributed, seed_everything, start
from ddnn.engine.summary import format_table
from ddnn.engine.teachers import evaluate_teachers, load_teachers
from ddnn.engine.tensorboard import EpochScalars, writer_class
from ddnn.errors import DdnnError
from ddnn.files import remove_leftovers
from ddnn.methods import Method
from ddnn.models.cost import MACS_NOTE, count_params
from ddnn.models.pretrained import apply_init_from
from ddnn.text import print_line


class Trainer:
    """Trains `cfg` into the run folder `out`; `fit()` returns the results.json content."""

    def __init__(self, cfg: Config, out: Path, log=None, resume: dict | None = None, restart: bool = False) -> None:
        """`resume`: a checkpoint of this run folder to continue from (its config is `cfg`); `restart`:
        start afresh in a folder holding only what a run killed before its first checkpoint wrote.
        Every input is checked before the run folder is made, so bad input leaves nothing behind."""
        check_config(cfg)
        self.out = Path(out)
        self.runtime, self.world = start(cfg)
        self.log = (log or print_line) if self.world.is_main else (lambda line: None)
        if resume is None and only_a_failed_start(self.out):
            self.log(f"ddnn: {self.out} holds only the start of a run that never finished an epoch; starting afresh")
        elif resume is None and not (restart and can_start_fresh(self.out)):
            check_out_dir(self.out)
        scalars = writer_class() if cfg.runtime.tensorboard and self.world.is_main else None
        seed_everything(cfg.train.seed)
        self.data, self.spec = load_data(cfg)
        self.cfg = cfg = resolve_distributed(cfg, self.world)
        if resume is None:  # a new run: the id that ties its checkpoints and results to its folder
            self.cfg = cfg = dataclasses.replace(cfg, run_id=new_run_id())
        self.method, self.init_sha256 = self._build_method(fresh=resume is None)
        self.model = self._distribute(self.method)
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
        self.folder = RunFolder(self.out, writer=self.world.is_main)
        self.folder.open(to_dict(cfg), self.history, fresh=resume is None)
        self.tensorboard = EpochScalars(scalars, self.folder.tensorboard) if scalars else None

    def _build_method(self, fresh: bool) -> tuple[Method, str | None]:
        """The method on this process's device, its teachers attached (kd) and, for a new run, its
        weights from `model.init_from`; also that file's sha256 (None without one)."""
        cfg = self.cfg
        method = build_method(cfg, self.spec)
        if method.distils_from_teachers:
            teachers = load_teachers(cfg.method.kd, self.spec)
            notes = method.attach(teachers)
            evaluate_teachers(teachers, self.data, self.spec, self.runtime, cfg.data.eval_batch_size, self.log)
            for line in notes:
                self.log(line)
        init_sha256 = None
        if cfg.model.init_from and fresh:
            init_sha256 = apply_init_from(method, Path(cfg.model.init_from).expanduser(), self.log)
        return self.runtime.prepare(method), init_sha256

    def _distribute(self, method: Method) -> torch.nn.Module:
        """What the training step calls: the method, or its DistributedDataParallel wrapper."""
        if not self.world.distributed:
            return method
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.runtime.device.index] if self.runtime.device.type == "cuda" else None
        return DistributedDataParallel(method, device_ids=ids, find_unused_parameters=not method.uses_every_parameter)

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
        """One pass over the training split: {"lr" of the last step, mean "losses", "train_top1"}."""
        cfg, rt, world = self.cfg, self.runtime, self.world
        self.method.train()
        tally = _Tally(rt.device)
        show = sys.stderr.isatty() if cfg.runtime.progress == "auto" else cfg.runtime.progress
        stream = batches(self.data.train, cfg.data.batch_size, self.normalize,
                         shuffle_seed=cfg.train.seed * 100_003 + epoch, augment=cfg.data.augment,
                         crop_padding=cfg.data.crop_padding)
        bar = tqdm(stream, total=self.steps_per_epoch, desc=f"epoch {epoch}/{cfg.train.epochs}",
                   disable=not show, leave=False, dynamic_ncols=True)
        for step, (x, y) in enumerate(bar):
            n_global = len(y)
            if world.distributed:
                if n_global < world.size:  # too few samples left to give every process one
                    continue
                part = world.slice(n_global)
                x, y = x[part], y[part]
            x, y = rt.to_input(x), y.to(rt.device)
            losses, logits = self._step(x, y, n_global, epoch, step)
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            tally.add(losses, logits, y)
        return {"lr": lr, **tally.totals(world)}

    def _step(self, x: torch.Tensor, y: torch.Tensor, n_global: int, epoch: int, step: int):
        """Forward, backward and optimizer step on this process's slice of a global batch of `n_global`."""
        world = self.world
        self.method.progress = epoch - 1 + step / self.steps_per_epoch
        self.optimizer.zero_grad(set_to_none=True)
        with self._gradient_sync():
            with self.runtime.autocast():
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
        return losses, logits

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
                 f"{self.runtime.precision}{' channels_last' if self.runtime.channels_last else ''}"
                 f"{describe_choice(self.runtime, cfg.runtime.precision)}{world} | -> {self.out}")
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
                self.folder.save_epoch(self._checkpoint(), record, improved)  # one snapshot for both files
                self._log_epoch(record, evaluated)
        seconds = sum(r["seconds"] for r in self.history)
        results = self.finish(self.best_epoch, seconds) if self.world.is_main else {}
        self.world.barrier()  # the other processes wait for the final evaluation before they exit
        return results

    def _log_epoch(self, record: dict, evaluated: dict[str, float]) -> None:
        accs = " ".join(f"{k} {v:.2f}" for k, v in evaluated.items())
        loss = sum(record["losses"].values())
        self.log(f"epoch {record['epoch']:>3}/{self.cfg.train.epochs} lr {record['lr']:.4f} loss {loss:.4f} | "
                 f"{self.select_split} top1: {accs} | {record['seconds']:.1f}s")
        if self.tensorboard is not None:
            self.tensorboard.write(record, evaluated, self.select_split)

    def finish(self, best_epoch: int, seconds: float) -> dict:
        """Test top-1 of the final weights and of best.pt, costs per net; writes results.json."""
        final = self._evaluate("test")
        val = self._evaluate("val") if self.data.val is not None else None
        final_state = {k: v.clone() for k, v in self.method.state_dict().items()}
        self.method.load_state_dict(self.folder.best()["state"])
        best_test = self._evaluate("test")
        best_val = self._evaluate("val") if self.data.val is not None else None
        self.method.load_state_dict(final_state)
        results = self._results(best_epoch, seconds)
        costs = self.method.net_costs(self.spec.shape)
        results["nets"] = {name: {**costs[name], "top1": final[name], "best_top1": best_test[name],
                                  "val_top1": None if val is None else val[name]} for name in final}
        results.update(self.method.extra_results(  # e.g. online: the best student of each checkpoint
            {"top1": final, "val_top1": val, "best_top1": best_test, "best_val_top1": best_val}, self.spec.shape))
        self.folder.finish(results)
        if self.tensorboard is not None:
            self.tensorboard.close()
        self.log(format_table(results))
        self.log(f"trained in {seconds:.1f}s; run folder: {self.out}")
        return results

    def _results(self, best_epoch: int, seconds: float) -> dict:
        """results.json's description of the run (the nets and the method's entries follow)."""
        cfg, data = self.cfg, self.data
        return {
            "run_id": cfg.run_id, "method": cfg.method.name, "dataset": cfg.data.name, "model": cfg.model.name,
            "epochs": cfg.train.epochs, "seed": cfg.train.seed, "split": "test",
            "selected_on": self.select_split, "best_epoch": best_epoch, "train_seconds": round(seconds, 2),
            "device": str(self.runtime.device), "precision": self.runtime.precision,
            "train_size": len(data.train), "test_size": len(data.test),
            "val_size": 0 if data.val is None else len(data.val),
            "macs_note": MACS_NOTE, "total_params": count_params(self.method), "processes": self.world.size,
            "init_from": None if self.init_sha256 is None else {"path": cfg.model.init_from, "sha256": self.init_sha256},
        }


class _Tally:
    """An epoch's running sums: each loss term weighted by its batch, and per net the correct
    predictions and the samples it saw (a method may run only some nets per step)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
        self.correct: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
        self.counted: dict[str, int] = defaultdict(int)
        self.seen = 0

    def add(self, losses: dict[str, torch.Tensor], logits: dict[str, torch.Tensor], y: torch.Tensor) -> None:
        for k, v in losses.items():
            self.sums[k] += v.detach().float() * len(y)
        for name, z in logits.items():
            self.correct[name] += (z.detach().argmax(1) == y).sum()
            self.counted[name] += len(y)
        self.seen += len(y)

    def totals(self, world: World) -> dict:
        """Mean loss terms and train top-1 per net over every process's samples."""
        sums, correct, device = self.sums, self.correct, self.device
        n_sums, n_nets = len(sums), len(correct)
        totals = world.sum(torch.stack([*sums.values(), *correct.values(),
                                        *(torch.tensor(float(self.counted[k]), device=device) for k in correct),
                                        torch.tensor(float(self.seen), device=device)]).float()).tolist()
        seen_all = totals[-1]
        return {"losses": {k: totals[i] / seen_all for i, k in enumerate(sums)},
                "train_top1": {k: 100.0 * totals[n_sums + i] / totals[n_sums + n_nets + i]
                               for i, k in enumerate(correct)}}


def train_run(cfg: Config | None, out: Path, log=None, resume: bool = False) -> dict:
    """Train `cfg` into the run folder `out`: results.json's content.

    `resume`: continue the run in `out` from its last checkpoint if it has one, else start it there;
    `cfg` must then agree with the run's own config (None: use the run's own config)."""
    if not resume:
        return Trainer(cfg, out, log).fit()
    say = log or print_line
    ckpt = find_last(Path(out), say)
    if ckpt is None:
        if cfg is None:
            raise DdnnError(f"{out} holds no last.pt to resume; start the run with: ddnn train --out {out}")
        return Trainer(cfg, out, log, restart=True).fit()
    check_belongs(Path(out), ckpt, Path(out) / "last.pt")
    cfg = checkpoint_config(ckpt, cfg, Path(out))
    finished = finished_results(out) if ckpt["epoch"] >= cfg.train.epochs else None
    if finished is not None:
        remove_leftovers(Path(out))  # a save killed after the run finished (e.g. by ddnn calibrate)
        say(f"ddnn: {out} already finished its {cfg.train.epochs} epochs; nothing to resume")
        return finished
    return Trainer(cfg, out, log, resume=ckpt).fit()
