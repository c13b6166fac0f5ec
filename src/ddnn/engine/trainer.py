"""The training loop. It never knows which method it runs: it sums the named loss terms, steps the
optimizer, logs each term by name, and writes the run-output contract (DESIGN.md)."""

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
from ddnn.engine.checkpoint import FORMAT, save_atomic
from ddnn.engine.evaluate import evaluate
from ddnn.engine.runtime import Runtime, resolve_runtime
from ddnn.engine.schedule import make_optimizer, make_scheduler
from ddnn.engine.setup import InputSpec, build_method, check_config, load_data
from ddnn.engine.summary import format_table
from ddnn.errors import DdnnError
from ddnn.methods import Method


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_out_dir(out: Path) -> None:
    """Refuse a run folder that already holds something (a previous run is never overwritten)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DdnnError(f"run folder {out} already exists and is not empty; choose another --out or remove it")


def prepare_out_dir(out: Path) -> Path:
    """Create the run folder (after every input check passed, so bad input leaves nothing behind)."""
    check_out_dir(out)
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


class Trainer:
    """Trains `cfg` into the run folder `out`; `fit()` returns the results.json content."""

    def __init__(self, cfg: Config, out: Path, log=None) -> None:
        check_config(cfg)
        self.cfg = cfg
        self.log = log or (lambda line: print(line, flush=True))  # flushed: progress shows in pipes and logs
        check_out_dir(Path(out))
        self.runtime: Runtime = resolve_runtime(cfg.runtime)
        seed_everything(cfg.train.seed)
        self.data, self.spec = load_data(cfg)
        method = build_method(cfg, self.spec)
        self.init_sha256 = None
        if cfg.model.init_from:
            from ddnn.models.pretrained import apply_init_from

            self.init_sha256 = apply_init_from(method, Path(cfg.model.init_from).expanduser(), self.log)
        self.method = self.runtime.prepare(method)
        self.out = prepare_out_dir(Path(out))
        self.normalize = Normalizer(self.spec.mean, self.spec.std)
        self.steps_per_epoch = num_batches(self.data.train, cfg.data.batch_size)
        self.optimizer = make_optimizer(self.method.parameters(), cfg.optim)
        self.scheduler = make_scheduler(self.optimizer, cfg.schedule, cfg.train.epochs, self.steps_per_epoch)
        self.scaler = self.runtime.grad_scaler()
        self.select_split = "val" if self.data.val is not None else "test"
        (self.out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

    # -- one epoch ---------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict:
        cfg, rt = self.cfg, self.runtime
        self.method.train()
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=rt.device))
        correct: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=rt.device))
        seen = 0
        show = sys.stderr.isatty() if cfg.runtime.progress == "auto" else cfg.runtime.progress
        stream = batches(self.data.train, cfg.data.batch_size, self.normalize,
                         shuffle_seed=cfg.train.seed * 100_003 + epoch, augment=cfg.data.augment,
                         crop_padding=cfg.data.crop_padding)
        bar = tqdm(stream, total=self.steps_per_epoch, desc=f"epoch {epoch}/{cfg.train.epochs}",
                   disable=not show, leave=False, dynamic_ncols=True)
        for step, (x, y) in enumerate(bar):
            x, y = rt.to_input(x), y.to(rt.device)
            with rt.autocast():
                losses, logits = self.method.forward_train(x, y)
            total = sum(losses.values())
            if not torch.isfinite(total):
                bad = [k for k, v in losses.items() if not torch.isfinite(v)]
                raise DdnnError(f"loss became non-finite at epoch {epoch}, step {step} (term(s): {', '.join(bad)}); "
                                "lower optim.lr or use runtime.precision=fp32; last.pt holds the last good epoch")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            for k, v in losses.items():
                sums[k] += v.detach().float() * len(y)
            for name, z in logits.items():
                correct[name] += (z.detach().argmax(1) == y).sum()
            seen += len(y)
        return {"lr": lr, "losses": {k: v.item() / seen for k, v in sums.items()},
                "train_top1": {k: 100.0 * v.item() / seen for k, v in correct.items()}}

    def _evaluate(self, split_name: str) -> dict[str, float]:
        split = self.data.val if split_name == "val" else self.data.test
        return evaluate(self.method, split, self.normalize, self.runtime, self.cfg.data.eval_batch_size)

    def _score(self, top1: dict[str, float]) -> float:
        if self.cfg.train.select == "full":
            return top1[next(iter(top1))]
        return sum(top1.values()) / len(top1)

    def _checkpoint(self, epoch: int, best_score: float) -> dict:
        return {
            "format": FORMAT, "config": to_dict(self.cfg), "input": self.spec.to_dict(), "epoch": epoch,
            "state": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "best_score": best_score,
        }

    # -- the whole run -----------------------------------------------------------------------
    def fit(self) -> dict:
        cfg = self.cfg
        self.log(f"ddnn: {cfg.method.name} | {cfg.model.name} {list(self.method.nets())} | {cfg.data.name} "
                 f"({len(self.data.train)} train) | {cfg.train.epochs} epochs | {self.runtime.device} "
                 f"{self.runtime.precision}{' channels_last' if self.runtime.channels_last else ''} | -> {self.out}")
        best_score, best_epoch, start = -math.inf, 0, time.perf_counter()
        with open(self.out / "metrics.jsonl", "a") as metrics:
            for epoch in range(1, cfg.train.epochs + 1):
                t0 = time.perf_counter()
                record = {"epoch": epoch, **self.train_epoch(epoch)}  # lr: the epoch's last step
                record[f"{self.select_split}_top1"] = evaluated = self._evaluate(self.select_split)
                record["seconds"] = round(time.perf_counter() - t0, 3)
                score = self._score(evaluated)
                if score > best_score:
                    best_score, best_epoch = score, epoch
                    save_atomic(self._checkpoint(epoch, best_score), self.out / "best.pt")
                save_atomic(self._checkpoint(epoch, best_score), self.out / "last.pt")
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                accs = " ".join(f"{k} {v:.2f}" for k, v in evaluated.items())
                loss = sum(record["losses"].values())
                self.log(f"epoch {epoch:>3}/{cfg.train.epochs} lr {record['lr']:.4f} loss {loss:.4f} | "
                         f"{self.select_split} top1: {accs} | {record['seconds']:.1f}s")
        return self.finish(best_epoch, time.perf_counter() - start)

    def finish(self, best_epoch: int, seconds: float) -> dict:
        """Test top-1 of the final weights and of best.pt, costs per net; writes results.json."""
        final = self._evaluate("test")
        val = self._evaluate("val") if self.data.val is not None else None
        final_state = {k: v.clone() for k, v in self.method.state_dict().items()}
        best = torch.load(self.out / "best.pt", map_location=self.runtime.device, weights_only=True)
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
            "macs_note": MACS_NOTE, "total_params": count_params(self.method),
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
        self.log(format_table(results))
        self.log(f"trained in {seconds:.1f}s; run folder: {self.out}")
        return results


def train(cfg: Config, out: Path, log=None) -> dict:
    """Train `cfg` into `out`: results.json's content, or with `cfg.seeds` one run per seed under
    `out` and the report's summary of them."""
    if cfg.seeds:
        from ddnn.engine.seeds import train_seeds

        return train_seeds(cfg, out, log)
    return Trainer(cfg, out, log).fit()
