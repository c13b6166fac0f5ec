"""The names of what a run folder holds: one list, used by everything that writes or reads one.

A run folder (`ddnn train --out DIR`) holds CONFIG, METRICS and the checkpoints from its first epoch,
RESULTS once it has finished, and later what the deploy commands add (PROFILE_*, EXPORT). A seeds
run or a pipeline is a folder of run folders with its own file beside them (SEEDS_CONFIG, PIPELINE),
and a report (REPORT_*) can be written into any folder.
"""

import json
from pathlib import Path
from typing import Any

import yaml

from ddnn.errors import DdnnError
from ddnn.files import write_text

CONFIG = "config.yaml"  # the fully resolved config
METRICS = "metrics.jsonl"  # one JSON object per epoch
RESULTS = "results.json"  # written when the run has finished
LAST = "last.pt"  # the checkpoint after the latest epoch
BEST = "best.pt"  # the checkpoint of the best epoch (on the validation split)
TENSORBOARD = "tensorboard"  # folder, with runtime.tensorboard=true
PROFILE_JSON, PROFILE_CSV = "profile.json", "profile.csv"  # ddnn profile
EXPORT = "export"  # folder of ddnn export's files
SEEDS_CONFIG = "seeds-config.yaml"  # a seeds run's config, so `--resume OUT` knows every seed
PIPELINE = "pipeline.yaml"  # a pipeline's plan, so the same command resumes it
REPORT_MD, REPORT_JSON = "report.md", "report.json"  # ddnn report (and the end of a seeds run)
TRADEOFF_PNG, CURVES_PNG = "tradeoff.png", "curves.png"


def checkpoint(which: str) -> str:
    """The file name of a run's `best` or `last` checkpoint."""
    return {"best": BEST, "last": LAST}[which]


def seed_folder(seed: int) -> str:
    """The sub-folder of one seed's run in a seeds run (or a pipeline with --seeds)."""
    return f"seed{seed}"


def read_json(path: Path, fix: str) -> Any:
    """A JSON file of a run folder; a damaged one is a one-line DdnnError ending with `fix`."""
    try:
        return json.loads(read_text(path, fix))
    except json.JSONDecodeError as err:
        raise DdnnError(f"{path} is not valid JSON (line {err.lineno}: {err.msg}); {fix}") from None


def read_text(path: Path, fix: str) -> str:
    """A text file of a run folder; one that cannot be read (a folder there, no permission) is a one-line DdnnError."""
    path = Path(path)
    if path.is_dir():
        raise DdnnError(f"{path} is a folder where a file should be; {fix}")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DdnnError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}; {fix}") from None


def read_yaml(path: Path, fix: str) -> Any:
    """A YAML file of a run folder (config.yaml, seeds-config.yaml, pipeline.yaml) with one-line errors."""
    try:
        return yaml.safe_load(read_text(path, fix))
    except yaml.YAMLError as err:
        raise DdnnError(f"{path} is not valid YAML ({getattr(err, 'problem', None) or err}); {fix}") from None


def require_run_folder(path: Path) -> Path:
    """`path` if it is a folder; a missing path or a file is a one-line DdnnError."""
    path = Path(path)
    if not path.exists():
        raise DdnnError(f"run folder {path} does not exist; give a folder written by `ddnn train`")
    if not path.is_dir():
        raise DdnnError(f"{path} is a file, not a run folder; give the folder written by `ddnn train` that holds it")
    return path


def write_json(obj: Any, path: Path) -> None:
    """Indented JSON with a final newline, as every JSON file of a run folder is written."""
    write_text(path, json.dumps(obj, indent=2) + "\n")
