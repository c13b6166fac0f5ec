"""One config, several seeds: each seed a normal run folder, then the spread over seeds.

`OUT/seed<S>/` holds seed S's run; OUT itself gets `report.md`/`report.json` (mean ± sample std per
net of the final and the best-checkpoint top-1) and the report plots, the same files `ddnn report OUT`
writes, so the folder can be compared with others later (`ddnn report OUT OTHER`).
"""

import dataclasses
from pathlib import Path

from ddnn.config import Config
from ddnn.engine.setup import check_config
from ddnn.engine.trainer import check_out_dir, train


def parse_seeds(text: str) -> list[int]:
    from ddnn.errors import DdnnError

    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise DdnnError(f"--seeds '{text}' must be comma-separated integers, e.g. 0,1,2") from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise DdnnError(f"--seeds '{text}' must be distinct integers >= 0")
    return seeds


def train_seeds(cfg: Config, out: Path, log=None) -> dict:
    """Train `cfg` once per seed in `cfg.seeds` into sibling folders; returns the report's summary."""
    from ddnn.deploy.report import build_report

    log = log or (lambda line: print(line, flush=True))
    check_config(cfg)
    check_out_dir(Path(out))  # a previous run is never mixed into this one
    folders = []
    for seed in cfg.seeds:
        one = dataclasses.replace(cfg, seeds=None, train=dataclasses.replace(cfg.train, seed=seed))
        log(f"== seed {seed} ({len(folders) + 1}/{len(cfg.seeds)})")
        train(one, Path(out) / f"seed{seed}", log)
        folders.append(Path(out) / f"seed{seed}")
    return build_report(folders, Path(out), log)
