"""Reading finished run folders and pooling the seeds of one config, for `ddnn report`.

A group is every run whose resolved config.yaml is the same once the seed and the keys that do not
change what is trained are dropped (config.INCIDENTAL_KEYS: the run name, where the data lives,
runtime settings, the launch). Its numbers are the mean and sample standard deviation (ddof=1) over
those runs, per net.
"""

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddnn import run_files
from ddnn.config import flatten, is_incidental
from ddnn.errors import DdnnError

POOLED = "train.seed"  # besides the incidental keys, the one key whose runs are pooled into a group


@dataclass
class Run:
    """One finished run folder: its flattened config, results.json, metrics.jsonl and profile.json."""

    path: Path
    config: dict[str, Any]
    results: dict
    metrics: list[dict]
    profile: dict | None

    @property
    def seed(self) -> Any:
        return self.results.get("seed", self.config.get("train.seed"))


@dataclass
class Group:
    """Runs of one config that differ only in the ignored keys (in practice: seeds)."""

    key: str
    config: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    label: str = ""


CUT_SHORT = "the run may have been cut short: train it again"


# -- reading -----------------------------------------------------------------------------------

def expand_run_dirs(paths: list[Path]) -> list[Path]:
    """Run folders of the given paths: each is a run, or a parent whose sub-folders hold runs."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise DdnnError(f"run folder {path} does not exist; give folders written by ddnn train")
        if not path.is_dir():
            raise DdnnError(f"{path} is not a folder; give a run folder written by ddnn train (or a folder of runs)")
        if (path / run_files.RESULTS).is_file():
            runs = [path]
        else:
            runs = sorted(p.parent for p in path.rglob(run_files.RESULTS))
        if not runs:
            raise DdnnError(f"{path} has no results.json (nor any sub-folder with one): "
                            "is it a finished ddnn run? (train it with ddnn train)")
        found += [r for r in runs if r.resolve() not in {f.resolve() for f in found}]
    return found


def _read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl's records; an absent file gives none (curves are then left out for that run)."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(run_files.read_text(path, "restore it or train the run again").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise DdnnError(f"{path} line {number} is not valid JSON ({err.msg}); "
                            "remove the line or train the run again") from None
    return records


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / run_files.CONFIG
    if not path.exists():
        raise DdnnError(f"{run_dir} has no config.yaml, which ddnn report needs to group seeds: "
                        "is it a folder written by ddnn train?")
    data = run_files.read_yaml(path, "restore it from the run's checkpoint or train the run again")
    if not isinstance(data, dict):
        raise DdnnError(f"{path} is not a ddnn config (a mapping of sections); train the run again")
    return flatten(data)


def read_run(run_dir: Path) -> Run:
    """Everything ddnn report uses from one run folder; a damaged file is a one-line DdnnError."""
    results = run_files.read_json(run_dir / run_files.RESULTS, CUT_SHORT)
    if not isinstance(results, dict) or not isinstance(results.get("nets"), dict) or not results["nets"]:
        raise DdnnError(f"{run_dir / run_files.RESULTS} has no 'nets': is it a results.json written by ddnn train?")
    profile = None
    if (run_dir / run_files.PROFILE_JSON).exists():
        profile = run_files.read_json(run_dir / run_files.PROFILE_JSON, CUT_SHORT)
        if not isinstance(profile, dict) or not isinstance(profile.get("nets"), dict):
            raise DdnnError(f"{run_dir / run_files.PROFILE_JSON} has no 'nets'; run ddnn profile --run {run_dir} again")
    return Run(run_dir, _read_config(run_dir), results, _read_metrics(run_dir / run_files.METRICS), profile)


# -- grouping ----------------------------------------------------------------------------------

def _ignored(key: str) -> bool:
    return key == POOLED or is_incidental(key)


def show_value(value: Any) -> str:
    """A config value as it is written on the command line (`[resnet20, resnet8]`, `3.0`)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs pooled by config, in the order their first run was given, each with a unique label."""
    groups: dict[str, Group] = {}
    for run in runs:
        config = {k: v for k, v in run.config.items() if not _ignored(k)}
        key = json.dumps(config, sort_keys=True, default=str)
        groups.setdefault(key, Group(key, config)).runs.append(run)
    result = list(groups.values())
    for group in result:
        group.label = f"{group.config.get('method.name', '?')} {group.config.get('model.name', '?')}"
    for label in {g.label for g in result}:
        tied = [g for g in result if g.label == label]
        if len(tied) < 2:
            continue
        keys = sorted({k for g in tied for k in g.config})
        differ = [k for k in keys if len({show_value(g.config.get(k)) for g in tied}) > 1]
        for g in tied:
            g.label += " (" + ", ".join(f"{k}={show_value(g.config.get(k))}" for k in differ) + ")"
    return result


# -- aggregation -------------------------------------------------------------------------------

def stats(values: list[float | None]) -> dict | None:
    """Mean and sample std (ddof=1; None for one value) of the values that exist."""
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "n": len(values), "values": values}


def batch1_latency(profile: dict | None, net: str) -> float | None:
    """Median batch-1 latency (ms) of the standalone net in profile.json, or None."""
    try:
        return float(profile["nets"][net]["latency_ms"]["1"]["standalone"]["median"])
    except (KeyError, TypeError, ValueError):
        return None


def net_names(group: Group) -> list[str]:
    """Nets in results.json's order (full net first), any net only some runs have at the end."""
    names: list[str] = []
    for run in group.runs:
        names += [n for n in run.results["nets"] if n not in names]
    return names


def aggregate(group: Group) -> dict:
    """The group's numbers per net: costs of the first run that has the net, top-1 stats, latency."""
    nets = []
    profiled = all(run.profile is not None for run in group.runs)
    for name in net_names(group):
        entries = [run.results["nets"][name] for run in group.runs if name in run.results["nets"]]
        first = entries[0]
        latency = stats([batch1_latency(run.profile, name) for run in group.runs]) if profiled else None
        nets.append({
            "name": name, "blocks": first.get("blocks"), "params": first.get("params"), "macs": first.get("macs"),
            "n": len(entries), "top1": stats([e.get("top1") for e in entries]),
            "best_top1": stats([e.get("best_top1") for e in entries]), "latency_ms": latency,
        })
    first = group.runs[0].results
    return {
        "label": group.label, "method": group.config.get("method.name"), "model": group.config.get("model.name"),
        "dataset": first.get("dataset"), "epochs": first.get("epochs"), "split": first.get("split", "test"),
        "selected_on": first.get("selected_on"), "n": len(group.runs), "seeds": [run.seed for run in group.runs],
        "runs": [str(run.path) for run in group.runs], "shared_seeds": shared_seeds(group), "nets": nets,
    }


def shared_seeds(group: Group) -> dict[str, list[str]]:
    """Seeds that more than one run of the group used, with those runs: the same config and seed train
    the same weights (on CPU bit for bit), so such runs are copies, not independent samples."""
    by_seed: dict[str, list[str]] = {}
    for run in group.runs:
        by_seed.setdefault(str(run.seed), []).append(str(run.path))
    return {seed: paths for seed, paths in by_seed.items() if len(paths) > 1}


def shared_seeds_note(summary: dict) -> str | None:
    """The warning a report gives for a group whose runs share seeds (None when every seed differs)."""
    shared = summary.get("shared_seeds")
    if not shared:
        return None
    which = "; ".join(f"seed {seed}: {', '.join(paths)}" for seed, paths in shared.items())
    return (f"{summary['label']}: runs share a seed ({which}); the same config and seed train the same weights, so "
            "they are not independent and its ± understates the spread over seeds: give runs of distinct seeds")


def compare(first: dict, second: dict) -> dict | None:
    """Per shared net: mean top-1 of `first` minus that of `second`, with the standard error
    sqrt(s1^2/n1 + s2^2/n2) of that difference when both groups have two or more runs."""
    seconds = {net["name"]: net for net in second["nets"]}
    rows = []
    for a in first["nets"]:
        b = seconds.get(a["name"])
        if b is None:
            continue
        row = {"net": a["name"]}
        for key in ("top1", "best_top1"):
            sa, sb = a[key], b[key]
            diff = se = None
            if sa and sb:
                diff = sa["mean"] - sb["mean"]
                if sa["std"] is not None and sb["std"] is not None:
                    se = math.sqrt(sa["std"] ** 2 / sa["n"] + sb["std"] ** 2 / sb["n"])
            row[key] = {"diff": diff, "se": se}
        rows.append(row)
    if not rows:
        return None
    return {"first": first["label"], "second": second["label"], "nets": rows}


def curves(group: Group) -> dict:
    """Per-epoch means over the group's runs: top-1 per net on the split that was evaluated each
    epoch (val, or test when the run had none) and the summed training loss (all terms)."""
    key = "val_top1" if any("val_top1" in m for run in group.runs for m in run.metrics) else "test_top1"
    top1: dict[str, dict[int, list[float]]] = {}
    loss: dict[int, list[float]] = {}
    for run in group.runs:
        for record in run.metrics:
            epoch = record.get("epoch")
            if epoch is None:
                continue
            for net, value in (record.get(key) or {}).items():
                top1.setdefault(net, {}).setdefault(epoch, []).append(value)
            if record.get("losses"):
                loss.setdefault(epoch, []).append(sum(record["losses"].values()))

    def series(by_epoch: dict[int, list[float]]) -> dict:
        epochs = sorted(by_epoch)
        parts = [stats(by_epoch[e]) for e in epochs]
        return {"epoch": epochs, "mean": [p["mean"] for p in parts], "std": [p["std"] or 0.0 for p in parts]}

    order = [n for n in net_names(group) if n in top1] + [n for n in top1 if n not in net_names(group)]
    return {"split": key.removesuffix("_top1"), "top1": {net: series(top1[net]) for net in order},
            "loss": series(loss) if loss else None}
