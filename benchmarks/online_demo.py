"""Online distillation of cheap students on the embedded data: does it beat training them alone?

Three variants of the bundled config `online/mnist5k-demo` (shift-conv ResNet-20, widths 8/16/32,
1,000 MNIST-5k training images, 15 epochs), same recipe and seeds:
  standard   the standard-convolution ResNet-20 trained alone (method=individual model.cheap=null)
  cheap      one shift-conv student trained alone (method=individual)
  online     four shift-conv students + the online teacher (method=online, m=4, T=4); reported as
             the best student (chosen on the validation split) and the mean over the four students
Every run is a normal run folder under --out; finished runs are reused, so an interrupted demo
resumes. Writes demo.json and demo.md (mean ± sample std over seeds of the test top-1 of the final
weights, params and MACs, and paired differences seed by seed) into --out and prints the Markdown.

Usage: python benchmarks/online_demo.py [--seeds 0,1,2] [--out runs/online_demo] [--threads N] [key=value ...]
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from ddnn.config import load_config
from ddnn.text import human
from ddnn.experiments import train

CONFIG = "online/mnist5k-demo"
VARIANTS = {
    "standard": ["method=individual", "model.cheap=null"],
    "cheap": ["method=individual"],
    "online": [],
}


def run_one(variant: str, seed: int, out: Path, threads: int, overrides: list[str]) -> dict:
    folder = out / variant / f"seed{seed}"
    if (folder / "results.json").is_file():
        return json.loads((folder / "results.json").read_text())
    cfg = load_config(CONFIG, [f"name=online-demo-{variant}", f"train.seed={seed}", "runtime.progress=false",
                               f"runtime.threads={threads}", *VARIANTS[variant], *overrides])
    if folder.exists():  # an interrupted run: start it again
        for f in folder.iterdir():
            f.unlink()
    return train(cfg, folder, log=lambda *_: None)


def scores(variant: str, res: dict) -> dict[str, float]:
    """The rows a run contributes: one net for the variants trained alone, best/mean/teacher for online."""
    if variant != "online":
        return {variant: next(iter(res["nets"].values()))["top1"]}
    return {"online best student": res["best_student"]["top1"], "online mean of 4 students": res["students"]["mean_top1"],
            "online teacher": res["teacher_top1"]}


def costs(variant: str, res: dict) -> dict[str, tuple[int, int]]:
    nets = res["nets"]
    if variant != "online":
        net = next(iter(nets.values()))
        return {variant: (net["params"], net["macs"])}
    student = (nets["student0"]["params"], nets["student0"]["macs"])
    return {"online best student": student, "online mean of 4 students": student,
            "online teacher": (nets["teacher"]["params"], nets["teacher"]["macs"])}


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def summarize(runs: dict[str, dict[int, dict]], seeds: list[int]) -> list[str]:
    rows: dict[str, dict[int, float]] = {}
    cost: dict[str, tuple[int, int]] = {}
    secs: dict[str, float] = {}
    for variant, by_seed in runs.items():
        for seed, res in by_seed.items():
            for row, top1 in scores(variant, res).items():
                rows.setdefault(row, {})[seed] = top1
                secs[row] = statistics.mean(r["train_seconds"] for r in by_seed.values())
            cost.update(costs(variant, res))
    lines = [f"Test top-1 % of the final weights on the 500 test digits, mean ± sample std over seeds "
             f"{', '.join(map(str, seeds))}:", "",
             "| net | top-1 % | per seed | params | MACs | train s (run) |", "|---|---|---|---|---|---|"]
    for row, by_seed in rows.items():
        vals = [by_seed[s] for s in seeds]
        lines.append(f"| {row} | {mean_std(vals)} | {' / '.join(f'{v:.1f}' for v in vals)} | "
                     f"{human(cost[row][0])} | {human(cost[row][1])} | {secs[row]:.0f} |")
    pairs = [("online best student", "cheap"), ("online mean of 4 students", "cheap"),
             ("online best student", "standard"), ("cheap", "standard")]
    lines += ["", "Paired differences (same seed), mean ± sample std over seeds [wins/seeds]:", "",
              "| difference | points | per seed |", "|---|---|---|"]
    for a, b in pairs:
        if a in rows and b in rows:
            d = [rows[a][s] - rows[b][s] for s in seeds]
            lines.append(f"| {a} - {b} | {mean_std(d)} [{sum(x > 0 for x in d)}/{len(d)}] | "
                         f"{' / '.join(f'{x:+.1f}' for x in d)} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default="runs/online_demo")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="extra config overrides for every run")
    args = parser.parse_args()
    out, seeds = Path(args.out), [int(s) for s in args.seeds.split(",")]
    runs: dict[str, dict[int, dict]] = {}
    for variant in args.variants.split(","):
        for seed in seeds:
            t0 = time.perf_counter()
            res = runs.setdefault(variant, {})[seed] = run_one(variant, seed, out, args.threads, args.overrides)
            print(f"{variant} seed {seed}: " + " ".join(f"{k} {v:.1f}" for k, v in scores(variant, res).items())
                  + f" ({time.perf_counter() - t0:.0f}s)", flush=True)
    report = summarize(runs, seeds)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo.json").write_text(json.dumps(runs, indent=1))
    (out / "demo.md").write_text("\n".join(report))
    print("\n".join(report))


if __name__ == "__main__":
    main()
