"""One config, several seeds: each seed a normal run folder, then the spread over seeds.

`OUT/seed<S>/` holds seed S's run; OUT itself gets `report.md`/`report.json` (mean ± sample std per
net of the final and the best-checkpoint top-1) and the report plots, the same files `ddnn report OUT`
writes, so the folder can be compared with others later (`ddnn report OUT OTHER`).
"""

import dataclasses
from pathlib import Path

import yaml

from ddnn import run_files
from ddnn.config import Config, saved_config, to_dict
from ddnn.engine.distributed import process_rank
from ddnn.engine.resume import checkpoint_config
from ddnn.engine.run_folder import check_out_dir, only_a_failed_start
from ddnn.engine.setup import check_config
from ddnn.engine.trainer import train_run
from ddnn.errors import DdnnError
from ddnn.files import write_text
from ddnn.text import print_line


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise DdnnError(f"--seeds '{text}' must be comma-separated integers, e.g. 0,1,2") from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise DdnnError(f"--seeds '{text}' must be distinct integers >= 0")
    return seeds


def train(cfg: Config | None, out: Path, log=None, resume: bool = False) -> dict:
    """Train `cfg` into `out`: results.json's content, or with `cfg.seeds` one run per seed under
    `out` and the report's summary of them.

    `resume`: continue the run in `out` from its last checkpoint if it has one, else start it there;
    `cfg` must then agree with the run's own config (None: use the run's own config)."""
    seeds_config = Path(out) / run_files.SEEDS_CONFIG
    if cfg is None and seeds_config.is_file():
        cfg = saved_config(run_files.read_yaml(seeds_config, "give the seeds run's config again (-c FILE --seeds ...)"))
    if cfg is not None and cfg.seeds:
        return train_seeds(cfg, out, log, resume)
    return train_run(cfg, out, log, resume)


def only_failed_starts(out: Path) -> bool:
    """True when `out` holds a seeds run none of whose seeds finished an epoch (its seeds-config.yaml and
    seed folders holding only a failed start): the same command may start it again."""
    out = Path(out)
    if not (out / run_files.SEEDS_CONFIG).is_file():
        return False
    return all(p.name == run_files.SEEDS_CONFIG or (p.is_dir() and p.name.startswith("seed")
                                                     and (only_a_failed_start(p) or not any(p.iterdir())))
               for p in out.iterdir())


def train_seeds(cfg: Config, out: Path, log=None, resume: bool = False) -> dict:
    """Train `cfg` once per seed in `cfg.seeds` into sibling folders; returns the report's summary.
    `resume`: finished seeds are kept, a stopped one continues, the rest start."""
    from ddnn.experiments.report import build_report  # matplotlib: only when a report is written

    log = log or print_line
    check_config(cfg)
    out = Path(out)
    saved = out / run_files.SEEDS_CONFIG
    if resume and saved.is_file():
        checkpoint_config({"config": run_files.read_yaml(saved, "train into another --out")}, cfg, out)  # same experiment?
    elif process_rank() == 0 and not (resume and not out.exists()) and not only_failed_starts(out):
        check_out_dir(out)  # a previous run is never mixed into this one
    if process_rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_text(saved, yaml.safe_dump(to_dict(cfg), sort_keys=False))
    folders = []
    for seed in cfg.seeds:
        one = dataclasses.replace(cfg, seeds=None, train=dataclasses.replace(cfg.train, seed=seed))
        log(f"== seed {seed} ({len(folders) + 1}/{len(cfg.seeds)})")
        train_run(one, out / run_files.seed_folder(seed), log, resume=resume)
        folders.append(out / run_files.seed_folder(seed))
    if process_rank() != 0:
        return {}
    return build_report(folders, out, log)
