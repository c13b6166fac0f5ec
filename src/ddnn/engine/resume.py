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

from ddnn import run_files
from ddnn.config import Config, apply_overrides, flatten, is_incidental, lookup, saved_config, to_dict
from ddnn.errors import DdnnError


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


def first_difference(saved: Config, given: Config) -> str | None:
    """The first dotted key whose value differs between two configs, among those that change what a
    run computes (config.INCIDENTAL_KEYS, where and how it runs, may differ)."""
    ours, theirs = flatten(to_dict(saved)), flatten(to_dict(given))
    return next((k for k, v in ours.items() if not is_incidental(k) and theirs.get(k) != v), None)


def checkpoint_config(ckpt: dict[str, Any], given: Config | None, out: Path) -> Config:
    """The run's own config, after checking that a config given on the command line agrees with it."""
    try:
        saved = saved_config(ckpt["config"])
    except (DdnnError, KeyError, TypeError) as err:
        raise DdnnError(f"the checkpoint in {out} holds a config this ddnn cannot read ({err}); "
                        "resume it with the ddnn version that started it") from None
    if given is not None:
        key = first_difference(saved, given)
        if key:
            raise DdnnError(f"cannot resume {out}: its config has {key}={lookup(saved, key)!r} but "
                            f"{lookup(given, key)!r} was given; resume with the run's own config (drop "
                            "-c/overrides) or train into another --out")
        # where and how it runs may change between attempts (another machine, more threads, the data moved)
        saved = dataclasses.replace(saved, runtime=given.runtime, data=dataclasses.replace(saved.data, root=given.data.root))
    return saved


def resume_config(folder: Path, overrides: list[str] | tuple[str, ...]) -> Config:
    """`--resume DIR key=value ...`: the run's own config (its config.yaml, or a seeds run's
    seeds-config.yaml) with the overrides laid on it. Resuming then refuses any that changes what is
    trained (see checkpoint_config): in effect only where and how it runs may change."""
    folder = Path(folder)
    path = next((folder / name for name in (run_files.SEEDS_CONFIG, run_files.CONFIG) if (folder / name).exists()), None)
    if path is None:
        raise DdnnError(f"{folder} holds no run to resume (no {run_files.CONFIG}); "
                        f"start the run with: ddnn train --out {folder}")
    data = run_files.read_yaml(path, "resume with the run's config given again (-c FILE)")
    if not isinstance(data, dict):
        raise DdnnError(f"{path} is not a ddnn config; resume with the run's config given again (-c FILE)")
    return saved_config(apply_overrides(data, overrides))
