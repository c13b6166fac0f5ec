"""Continuing a stopped run exactly where its last checkpoint left it.

A run saves `last.pt` after every epoch: weights, optimizer, scheduler, scaler, epoch, the metrics so
far and the RNG states. The data order and augmentation of epoch e come from a generator seeded by
(seed, e), so replaying from the start of epoch e+1 gives the same batches an uninterrupted run sees:
on CPU the resumed run ends with the same weights, bit for bit. A kill loses at most the epoch in flight.
"""

import dataclasses
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddnn.config import Config, saved_config, to_dict
from ddnn.engine.checkpoint import load_checkpoint_or_previous, previous_of
from ddnn.errors import DdnnError

# What a run folder holds before its first checkpoint; a folder with only these can start afresh.
STARTUP_FILES = {"config.yaml", "metrics.jsonl", "tensorboard"}
# An epoch saves best.pt before last.pt: best copies with no last copy are from a first epoch killed
# before its last.pt was in place, and starting afresh recomputes them bit for bit.
FIRST_EPOCH_FILES = {"best.pt", "best.prev.pt"}


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain data (a checkpoint holds no pickled objects)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def find_last(out: Path, log) -> dict[str, Any] | None:
    """The checkpoint to resume `out` from (last.pt, or last.prev.pt if last.pt is damaged); None if neither exists."""
    last = Path(out) / "last.pt"
    if not last.is_file() and not previous_of(last).is_file():
        return None
    ckpt, _ = load_checkpoint_or_previous(last, log)
    return ckpt


def clean_partial_writes(out: Path) -> None:
    """Remove temp files a killed save left behind (the renamed-into-place files are never partial)."""
    for junk in [*Path(out).glob(".*.tmp"), *Path(out).glob(".*.staged")]:
        junk.unlink(missing_ok=True)


def can_start_fresh(out: Path) -> bool:
    """True when `out` does not exist or holds only what a run writes before its first last.pt."""
    out = Path(out)
    if not out.exists():
        return True
    if not out.is_dir():
        return False
    names = {p.name for p in out.iterdir()}
    if names & {"last.pt", "last.prev.pt"}:
        return False
    return all(name in STARTUP_FILES | FIRST_EPOCH_FILES or name.endswith((".tmp", ".staged")) for name in names)


def _comparable(cfg: Config) -> dict[str, Any]:
    """The parts of a config that change what a run computes (not where or how fast it runs)."""
    d = to_dict(cfg)
    d.pop("runtime")
    d.pop("name")
    d["distributed"] = {k: d["distributed"][k] for k in ("lr_scaling", "reference_batch")}
    return d


def _first_difference(a: Any, b: Any, key: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in a:
            found = _first_difference(a[k], b.get(k), f"{key}.{k}" if key else k)
            if found:
                return found
        return None
    return None if a == b else key


def checkpoint_config(ckpt: dict[str, Any], given: Config | None, out: Path) -> Config:
    """The run's own config, after checking that a config given on the command line agrees with it."""
    try:
        saved = saved_config(ckpt["config"])
    except (DdnnError, KeyError, TypeError) as err:
        raise DdnnError(f"the checkpoint in {out} holds a config this ddnn cannot read ({err}); "
                        "resume it with the ddnn version that started it") from None
    if given is not None:
        key = _first_difference(_comparable(saved), _comparable(given))
        if key:
            ours, theirs = _lookup(saved, key), _lookup(given, key)
            raise DdnnError(f"cannot resume {out}: its config has {key}={ours!r} but {theirs!r} was given; "
                            "resume with the run's own config (drop -c/overrides) or train into another --out")
        # where and how fast it runs may change between attempts (another machine, more threads)
        saved = dataclasses.replace(saved, runtime=given.runtime)
    return saved


def _lookup(cfg: Config, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value
