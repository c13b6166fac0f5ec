"""Several runs described in one config, each stage a normal run folder: e.g. teachers -> assistant ->
student for two-stage distillation (docs/methods.md).

A pipeline YAML has `name`, `common` (config keys every stage starts from) and `stages`, a list of
`{name, config, teachers, seeds}`: `config` holds the stage's own keys, `teachers` names earlier
stages (their run folders become `method.kd.teachers`; other entries are paths, kept as given), and
`seeds` trains the stage once per seed (e.g. K teachers) into `OUT/<stage>/seed<S>/`, otherwise
the stage is `OUT/<stage>/`. Command-line overrides apply to every stage. A finished stage (its
results.json exists) is reused, so running the same command again resumes an interrupted pipeline.
With `--seeds`, stages without their own seeds run once per seed in `OUT/seed<S>/<stage>/`, and
stages with their own seeds are trained once and shared.
"""

import copy
from pathlib import Path

import yaml

from ddnn import run_files
from ddnn.config import Config, apply_overrides, find_config, from_dict, merge_sections, read_yaml
from ddnn.engine.run_folder import finished_results
from ddnn.engine.setup import check_config
from ddnn.engine.trainer import train_run
from ddnn.errors import DdnnError
from ddnn.files import write_text
from ddnn.text import print_line

STAGE_KEYS = ("name", "config", "teachers", "seeds")


def is_pipeline(ref: str) -> bool:
    """True when the config file `ref` describes a pipeline (a top-level `stages` list)."""
    return "stages" in read_yaml(find_config(ref))


class Pipeline:
    """The stages of a pipeline file as resolved configs, checked before anything trains."""

    def __init__(self, ref: str, overrides: list[str] | tuple[str, ...] = ()) -> None:
        path = find_config(ref)
        data = read_yaml(path)
        unknown = set(data) - {"name", "common", "stages"}
        if unknown:
            raise DdnnError(f"pipeline {path}: unknown top-level key(s) {', '.join(sorted(unknown))}; "
                            "allowed: name, common, stages")
        self.name = str(data.get("name", path.stem))
        stages = data.get("stages")
        if not isinstance(stages, list) or not stages:
            raise DdnnError(f"pipeline {path}: 'stages' must be a non-empty list of {{name, config, teachers, seeds}}")
        common = data.get("common") or {}
        self.stages: list[dict] = []
        for i, stage in enumerate(stages):
            if not isinstance(stage, dict) or "name" not in stage:
                raise DdnnError(f"pipeline {path}: stage {i + 1} must be a mapping with a 'name'")
            bad = set(stage) - set(STAGE_KEYS)
            if bad:
                raise DdnnError(f"pipeline {path}: stage '{stage['name']}' has unknown key(s) "
                                f"{', '.join(sorted(bad))}; allowed: {', '.join(STAGE_KEYS)}")
            name = str(stage["name"])
            if name in [s["name"] for s in self.stages] or "/" in name:
                raise DdnnError(f"pipeline {path}: stage name '{name}' is repeated or contains '/'")
            raw = apply_overrides(merge_sections(common, stage.get("config") or {}), overrides)
            raw["name"] = f"{self.name}-{name}"
            teachers = [str(t) for t in stage.get("teachers") or []]
            earlier = [s["name"] for s in self.stages]
            for t in teachers:
                if t not in earlier and not Path(t).expanduser().exists():
                    raise DdnnError(f"pipeline stage '{name}': teacher '{t}' is neither an earlier stage "
                                    f"({', '.join(earlier) or 'none'}) nor an existing run folder or checkpoint")
            if teachers:
                raw = merge_sections(raw, {"method": {"kd": {"teachers": ["<from stages>"]}}})
            cfg = from_dict(raw)  # every key checked now, before any stage trains
            if cfg.seeds:
                raise DdnnError(f"pipeline stage '{name}' sets the config key seeds; give the stage its own "
                                "`seeds:` list (or use --seeds for the whole pipeline)")
            if teachers and cfg.method.name != "kd":
                raise DdnnError(f"pipeline stage '{name}' lists teachers but its method is {cfg.method.name}; "
                                "set method: kd in its config")
            seeds = stage.get("seeds")
            if seeds is not None and (not isinstance(seeds, list) or not seeds
                                      or not all(isinstance(s, int) and s >= 0 for s in seeds)):
                raise DdnnError(f"pipeline stage '{name}': seeds must be a non-empty list of integers >= 0")
            self.stages.append({"name": name, "raw": raw, "teachers": teachers, "seeds": seeds, "cfg": cfg})

    def folders(self, stage: dict, out: Path, seed: int | None) -> list[tuple[Path, int | None]]:
        """(run folder, seed) of every run of a stage; seed None: the config's own train.seed."""
        if stage["seeds"]:
            return [(out / stage["name"] / run_files.seed_folder(s), s) for s in stage["seeds"]]
        return [((out if seed is None else out / run_files.seed_folder(seed)) / stage["name"], seed)]

    def configs(self, out: Path, seed: int | None) -> list[tuple[str, Path, Config]]:
        """(stage, folder, config) of every run in order, teachers resolved to earlier stages' folders."""
        runs, done = [], {}
        for stage in self.stages:
            teachers = []
            for t in stage["teachers"]:
                teachers += [str(f) for f in done[t]] if t in done else [t]
            done[stage["name"]] = []
            for folder, s in self.folders(stage, out, seed):
                raw = copy.deepcopy(stage["raw"])
                if teachers:
                    raw["method"]["kd"]["teachers"] = teachers
                if s is not None:
                    raw.setdefault("train", {})["seed"] = s
                runs.append((stage["name"], folder, from_dict(raw)))
                done[stage["name"]].append(folder)
        return runs


def run_pipeline(ref: str, overrides: list[str], out: Path, seeds: list[int] | None = None, log=None) -> list[dict]:
    """Train every stage in order into `out`; returns the results of every run (finished ones reused)."""
    log = log or print_line
    pipe = Pipeline(ref, overrides)
    for stage in pipe.stages:
        check_config(stage["cfg"])
    out = Path(out)
    plan_file = out / run_files.PIPELINE
    plan = {"name": pipe.name, "overrides": list(overrides), "seeds": seeds,
            "stages": [{"name": s["name"], "teachers": s["teachers"], "seeds": s["seeds"], "config": s["raw"]}
                       for s in pipe.stages]}
    if out.exists() and any(out.iterdir()):
        if not plan_file.is_file() or run_files.read_yaml(plan_file, "choose another --out") != plan:
            raise DdnnError(f"{out} is not empty and holds no run of this same pipeline; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_text(plan_file, yaml.safe_dump(plan, sort_keys=False))
    results, seen = [], set()
    for seed in seeds or [None]:
        for stage, folder, cfg in pipe.configs(out, seed):
            if folder in seen:
                continue  # a stage with its own seeds, shared by every pipeline seed
            seen.add(folder)
            finished = finished_results(folder)
            if finished is not None:
                log(f"== {pipe.name}: stage {stage} -> {folder} (finished earlier, reused)")
                results.append(finished)
                continue
            log(f"== {pipe.name}: stage {stage} -> {folder}")
            results.append(train_run(cfg, folder, log))
    return results

