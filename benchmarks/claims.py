"""The paper's comparison on the embedded data: each depth alone vs the DDNN trained four ways.

Variants (same recipe, epochs and seeds; only the objective changes):
  individual  each depth trained alone (method=individual)
  ce          DDNN, cross-entropy only (method=ddnn)
  kl          DDNN + KL from the full net only (ekd, beta=0)
  att         DDNN + attention distillation only (ekd, alpha=0)
  ekd         full EKD (CE + KL + attention)

Settings are recipes where depth matters (fewer images, narrower nets, shorter schedules). Every run
is a normal run folder under --out (finished runs are reused, so an interrupted benchmark resumes).
Writes claims.json and claims.md (mean ± sample std per net and paired differences against
`individual`, seed by seed) into --out and prints the Markdown.

Usage: python benchmarks/claims.py [--settings narrow,small-data] [--variants ...] [--seeds 0,1,2]
                                  [--jobs 2 --threads 1]  (two runs at once on a 2-core machine)
"""

import argparse
import json
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from ddnn.config import load_config
from ddnn.engine.trainer import train

VARIANTS = {
    "individual": ["method=individual"],
    "ce": ["method=ddnn"],
    "kl": ["method=ekd", "method.beta=0"],
    "att": ["method=ekd", "method.alpha=0"],
    "ekd": ["method=ekd"],
    # issue 8's remedies (see RESULTS.md "Making EKD earn its place")
    "ce-balanced": ["method=ddnn", "method.reduce=balanced"],
    "kl-balanced": ["method=ekd", "method.beta=0", "method.reduce=balanced"],
    "kl-mean": ["method=ekd", "method.beta=0", "method.reduce=mean"],
    "kl-lr0.2": ["method=ekd", "method.beta=0", "optim.lr=0.2"],
    "kl-only": ["method=ekd", "method.beta=0", "method.sub_ce=0"],  # in-place distillation
    "kl-half-ce": ["method=ekd", "method.beta=0", "method.sub_ce=0.5"],
    "individual-lr0.2": ["method=individual", "optim.lr=0.2"],
    "kl-only-lr0.2": ["method=ekd", "method.beta=0", "method.sub_ce=0", "optim.lr=0.2"],
}

# name -> (overrides on the default config, what it changes)
SETTINGS = {
    "default": ([], "the default run: 4,050 images, widths 16/32/64, 12 epochs"),
    "narrow": (["model.widths=[4,8,16]", "train.epochs=8"], "4,050 images, widths 4/8/16, 8 epochs"),
    "small-data": (["data.train_limit=500", "train.epochs=30"], "500 images, widths 16/32/64, 30 epochs"),
    "narrow-small": (["model.widths=[4,8,16]", "data.train_limit=1000", "train.epochs=15"],
                     "1,000 images, widths 4/8/16, 15 epochs"),
}


def run_one(setting: str, variant: str, seed: int, out: Path, threads: int = 0) -> dict:
    folder = out / setting / variant / f"seed{seed}"
    if (folder / "results.json").is_file():
        return json.loads((folder / "results.json").read_text())
    cfg = load_config(None, [f"name=claims-{setting}-{variant}", f"train.seed={seed}", "runtime.progress=false",
                             f"runtime.threads={threads}", *SETTINGS[setting][0], *VARIANTS[variant]])
    return train(cfg, folder, log=lambda *_: None, resume=True)  # an interrupted run continues


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def summarize(setting: str, runs: dict[str, dict[int, dict]]) -> list[str]:
    """Markdown for one setting: top-1 per variant and net, then paired differences vs individual."""
    variants = list(runs)
    nets = list(next(iter(next(iter(runs.values())).values()))["nets"])
    seeds = sorted(next(iter(runs.values())))
    lines = [f"### {setting}: {SETTINGS[setting][1]} (seeds {', '.join(map(str, seeds))})", "",
             "| variant | " + " | ".join(nets) + " | train s |", "|---" * (len(nets) + 2) + "|"]
    for v in variants:
        cells = [mean_std([runs[v][s]["nets"][n]["top1"] for s in seeds]) for n in nets]
        secs = statistics.mean(runs[v][s]["train_seconds"] for s in seeds)
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {secs:.0f} |")
    if "individual" in runs:
        lines += ["", "Paired difference to `individual` (same seed), mean ± sample std over seeds, "
                  "[wins/seeds]:", "", "| variant | " + " | ".join(nets) + " |", "|---" * (len(nets) + 1) + "|"]
        for v in variants:
            if v == "individual":
                continue
            cells = []
            for n in nets:
                d = [runs[v][s]["nets"][n]["top1"] - runs["individual"][s]["nets"][n]["top1"] for s in seeds]
                cells.append(f"{mean_std(d)} [{sum(x > 0 for x in d)}/{len(d)}]")
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="narrow,small-data")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="runs/claims")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each on --threads torch threads")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    args = parser.parse_args()
    out, seeds = Path(args.out), [int(s) for s in args.seeds.split(",")]
    tasks = [(setting, variant, seed) for setting in args.settings.split(",")
             for variant in args.variants.split(",") for seed in seeds]
    results: dict[tuple, dict] = {}
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        started = {pool.submit(run_one, *task, out, args.threads): (task, time.perf_counter()) for task in tasks}
        for future in as_completed(started):
            (setting, variant, seed), t0 = started[future]
            res = results[(setting, variant, seed)] = future.result()
            print(f"{setting} {variant} seed {seed}: " + " ".join(
                f"{n} {v['top1']:.1f}" for n, v in res["nets"].items()) + f" ({time.perf_counter() - t0:.0f}s)",
                flush=True)
    report, everything = [], {}
    for setting in args.settings.split(","):
        runs: dict[str, dict[int, dict]] = {}
        for variant in args.variants.split(","):
            for seed in seeds:
                runs.setdefault(variant, {})[seed] = results[(setting, variant, seed)]
        everything[setting] = runs
        report += summarize(setting, runs)
    (out / "claims.json").write_text(json.dumps(everything, indent=1))
    (out / "claims.md").write_text("\n".join(report))
    print("\n".join(report))


if __name__ == "__main__":
    main()
