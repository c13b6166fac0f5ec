"""A run folder on disk: what `ddnn train` writes there, and in which order.

The folder is made only after every input check passed (bad input leaves nothing behind). It then
holds config.yaml and metrics.jsonl from the start, best.pt and last.pt from the first epoch on
(best.pt first, so a folder with best copies and no last copy is a first epoch killed before its
last.pt), and results.json once the run has finished. Checkpoints are written with the checksummed,
keep-the-previous protocol of ddnn/checkpoint.py. Under torchrun only process 0 writes.
"""

import json
import secrets
from pathlib import Path
from typing import Any

import yaml

from ddnn import run_files
from ddnn.checkpoint import load_checkpoint, load_checkpoint_or_previous, previous_of, save_checkpoint
from ddnn.config import saved_config
from ddnn.engine.resume import first_difference
from ddnn.errors import DdnnError
from ddnn.files import NoSpace, remove_leftovers, write_text

# What a run folder holds before its first checkpoint; a folder with only these can start afresh.
STARTUP_FILES = {run_files.CONFIG, run_files.METRICS, run_files.TENSORBOARD}
# An epoch saves best.pt before last.pt: best copies with no last copy are from a first epoch killed
# before its last.pt was in place, and starting afresh recomputes them bit for bit.
FIRST_EPOCH_FILES = {run_files.BEST, previous_of(Path(run_files.BEST)).name}


def check_out_dir(out: Path) -> None:
    """Refuse a run folder that already holds something (a previous run is never overwritten)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DdnnError(f"run folder {out} is a file; choose another --out")
    if out.exists() and any(out.iterdir()):
        raise DdnnError(f"run folder {out} already exists and is not empty; choose another --out or remove it")


def can_start_fresh(out: Path) -> bool:
    """True when `out` does not exist or holds only what a run writes before its first last.pt."""
    out = Path(out)
    if not out.exists():
        return True
    if not out.is_dir():
        return False
    names = {p.name for p in out.iterdir()}
    if names & {run_files.LAST, previous_of(Path(run_files.LAST)).name}:
        return False
    return all(name in STARTUP_FILES | FIRST_EPOCH_FILES or name.endswith((".tmp", ".staged")) for name in names)


def only_a_failed_start(out: Path) -> bool:
    """True when `out` holds only what a run that failed before finishing its first epoch wrote (its
    config.yaml, an empty metrics.jsonl, temp files): nothing to keep, so the same command may start again."""
    out = Path(out)
    if not out.is_dir() or not (out / run_files.CONFIG).is_file():
        return False
    names = {p.name for p in out.iterdir()}
    metrics = out / run_files.METRICS
    if metrics.is_file() and metrics.stat().st_size > 0:
        return False
    return all(name in STARTUP_FILES or name.endswith((".tmp", ".staged")) for name in names)


def checkpoint_of(folder: Path, which: str = "best") -> Path:
    """The `which` (best or last) checkpoint of a finished or running run folder."""
    folder = run_files.require_run_folder(Path(folder))
    path = folder / run_files.checkpoint(which)
    if not path.exists():
        raise DdnnError(f"run folder {folder} has no {path.name}; is it a ddnn run folder (train one with `ddnn train`)?")
    return path


def new_run_id() -> str:
    """A fresh run's identity (random: two runs of one config still differ)."""
    return secrets.token_hex(8)


def check_belongs(folder: Path, ckpt: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint copied into `folder` from another run: its run id must be the one in the
    folder's config.yaml; for runs made before run ids, what it trains must be what config.yaml says."""
    folder = Path(folder)
    config_path = folder / run_files.CONFIG
    if not config_path.exists():
        return  # a folder with nothing to compare with (the checkpoint alone is the run)
    folder_config = run_files.read_yaml(config_path, "it tells which run the folder holds: restore it or use the "
                                        "checkpoint alone (ddnn eval --ckpt)")
    own = ckpt.get("config") or {}
    ours = folder_config.get("run_id") if isinstance(folder_config, dict) else None
    theirs = own.get("run_id") if isinstance(own, dict) else None
    fix = "it was copied from another run: put the run's own checkpoint back, or use the file alone (ddnn eval --ckpt)"
    if ours or theirs:
        if ours != theirs:
            raise DdnnError(f"{path} does not belong to run folder {folder}: its run id is {theirs or 'missing'}, "
                            f"the folder's (config.yaml) {ours or 'missing'}; {fix}")
        return
    try:
        key = first_difference(saved_config(folder_config), saved_config(own))
    except (DdnnError, TypeError, AttributeError):
        key = "the config"
    if key:
        raise DdnnError(f"{path} does not belong to run folder {folder}: its {key} is not the one in config.yaml; {fix}")


def find_last(out: Path, log) -> dict[str, Any] | None:
    """The checkpoint to resume `out` from (last.pt, or last.prev.pt if last.pt is damaged); None if neither exists."""
    last = Path(out) / run_files.LAST
    if not last.is_file() and not previous_of(last).is_file():
        return None
    ckpt, _ = load_checkpoint_or_previous(last, log)
    return ckpt


def finished_results(out: Path) -> dict | None:
    """results.json of a finished run folder (None while it has not finished)."""
    path = Path(out) / run_files.RESULTS
    return run_files.read_json(path, "remove it and resume the run again to rewrite it") if path.exists() else None


class RunFolder:
    """The files of one run. `writer` is False in every process but the first under torchrun: such a
    RunFolder writes nothing (the first process owns the folder)."""

    def __init__(self, path: Path, writer: bool = True) -> None:
        self.path = Path(path)
        self.writer = writer

    def open(self, config: dict, history: list[dict], fresh: bool) -> None:
        """Make the folder (`fresh`) or take it over (resuming), drop a killed save's temp files, and
        write config.yaml and metrics.jsonl; the checkpoint's history is the truth for the metrics."""
        if not self.writer:
            return
        if fresh:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise DdnnError(f"cannot create run folder {self.path}: {err.strerror}; "
                                "choose a writable --out") from None
        remove_leftovers(self.path)  # the temp files of a killed save (another command at work keeps its own)
        write_text(self.path / run_files.CONFIG, yaml.safe_dump(config, sort_keys=False))
        write_text(self.path / run_files.METRICS, "".join(json.dumps(r) + "\n" for r in history))

    def save_epoch(self, ckpt: dict, record: dict, improved: bool) -> None:
        """One epoch's checkpoint (best.pt too when it `improved`, then last.pt) and metrics line."""
        if not self.writer:
            return
        try:
            if improved:
                save_checkpoint(ckpt, self.path / run_files.BEST)
            save_checkpoint(ckpt, self.path / run_files.LAST)
            history = ckpt.get("history") or [record]  # the epochs so far, this one last
            write_text(self.path / run_files.METRICS, "".join(json.dumps(r) + "\n" for r in history))
        except NoSpace as err:
            raise NoSpace(f"{err} (resume the run with: ddnn train --resume {self.path})") from None

    def best(self) -> dict:
        return load_checkpoint(self.path / run_files.BEST)

    def finish(self, results: dict) -> None:
        """results.json; the run is complete, so the checkpoint copies kept for a crash go."""
        run_files.write_json(results, self.path / run_files.RESULTS)
        for name in (run_files.BEST, run_files.LAST):
            previous_of(self.path / name).unlink(missing_ok=True)

    @property
    def tensorboard(self) -> Path:
        return self.path / run_files.TENSORBOARD
