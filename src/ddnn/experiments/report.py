"""`ddnn report`: several finished runs side by side, seeds of one config pooled as mean ± std.

Writes report.md (the table), report.json (the same numbers), tradeoff.png (top-1 against MACs and
batch-1 latency) and curves.png (per-epoch top-1 and training loss), so EKD against individual
training is visible at a glance. Plots use matplotlib's Figure directly (Agg), so no display is needed
and the caller's pyplot backend is left alone.
"""

import io
import statistics
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter, NullLocator

from ddnn import run_files
from ddnn.experiments.runs import (Group, aggregate, compare, curves, expand_run_dirs, group_runs, read_run,
                                  shared_seeds_note)
from ddnn.errors import DdnnError
from ddnn.files import write_bytes, write_text
from ddnn.text import human, markdown_table as table

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
PROFILE_HINT = "run `ddnn profile --run DIR` on each run for latency"


# -- the Markdown table ------------------------------------------------------------------------

def mean_std(s: dict | None, digits: int = 2) -> str:
    """'98.47 ± 0.50'; '98.00 ± -' for a single run; '-' when there is no number."""
    if s is None:
        return "-"
    return f"{s['mean']:.{digits}f} ± " + ("-" if s["std"] is None else f"{s['std']:.{digits}f}")


def cost(n: int | None) -> str:
    return "-" if n is None else human(n)


def signed(d: dict) -> str:
    if d["diff"] is None:
        return "-"
    return f"{d['diff']:+.2f}" + ("" if d["se"] is None else f" ± {d['se']:.2f}")


def latency_note(groups: list[Group]) -> str | None:
    """Where the latencies were measured, from the profile.json files (None: no latency shown)."""
    profiles = [run.profile for g in groups for run in g.runs if run.profile is not None]
    if not profiles:
        return None
    where = sorted({f"{p.get('device', '?')}, {p.get('threads', '?')} threads, {p.get('precision', '?')}" for p in profiles})
    return ("latency = median ms of one image (batch 1) through the standalone net, measured by ddnn profile "
            f"({'; '.join(where)}), mean ± std over the runs; '-': not every run of the group was profiled")


def markdown(summaries: list[dict], comparison: dict | None, groups: list[Group], macs_note: str) -> str:
    lat_note = latency_note(groups)
    head = ["group", "net", "blocks", "params", "MACs", "n", "top-1 %", "best top-1 %"] + (["latency ms"] if lat_note else [])
    rows = [head]
    for s in summaries:
        for net in s["nets"]:
            blocks = "-".join(map(str, net["blocks"])) if net["blocks"] else "-"
            row = [s["label"], net["name"], blocks, cost(net["params"]), cost(net["macs"]), str(net["n"]),
                   mean_std(net["top1"]), mean_std(net["best_top1"])]
            rows.append(row + ([mean_std(net["latency_ms"], 3)] if lat_note else []))
    splits = sorted({s["split"] for s in summaries})
    selected = sorted({s["selected_on"] for s in summaries if s["selected_on"]})
    lines = [f"# ddnn report: {len(summaries)} group(s), {sum(s['n'] for s in summaries)} run(s)", ""]
    lines += [f"- **{s['label']}**: {s['n']} run(s), seeds {', '.join(map(str, s['seeds']))}; {s['dataset']}, "
              f"{s['epochs']} epoch{'' if s['epochs'] == 1 else 's'}; {', '.join(s['runs'])}" for s in summaries]
    lines += ["", *table(rows), "",
              f"top-1 % on the {'/'.join(splits)} split with the final weights; best top-1 % = best.pt, chosen on the "
              f"{'/'.join(selected) or 'val'} split; mean ± sample std (ddof=1) over the n runs (seeds) of a group, "
              f"'± -' when n = 1; {macs_note}"]
    lines.append(lat_note or f"no latency column: {PROFILE_HINT}")
    lines += [f"\n**warning**: {note}" for note in filter(None, map(shared_seeds_note, summaries))]
    if comparison:
        a, b = comparison["first"], comparison["second"]
        rows = [["net", "Δ top-1", "Δ best top-1"]]
        rows += [[r["net"], signed(r["top1"]), signed(r["best_top1"])] for r in comparison["nets"]]
        lines += ["", f"## {a} − {b}", "", *table(rows), "",
                  f"Δ = mean top-1 of {a} minus that of {b}, in points (positive: {a} is more accurate); "
                  "± = standard error of the difference, sqrt(s1²/n1 + s2²/n2), shown when both groups have n >= 2"]
    return "\n".join(lines) + "\n"


# -- the plots ---------------------------------------------------------------------------------

def _points(summary: dict, x_of) -> tuple[list, list, list, list]:
    """x, mean top-1, std and net name of the nets that have both numbers."""
    xs, ys, es, names = [], [], [], []
    for net in summary["nets"]:
        x = x_of(net)
        if x is not None and net["top1"] is not None:
            xs.append(x), ys.append(net["top1"]["mean"]), es.append(net["top1"]["std"] or 0.0), names.append(net["name"])
    return xs, ys, es, names


def _draw(ax, summaries: list[dict], x_of) -> list:
    """One line per group; groups are nudged 1.5 % apart in x so error bars at the same net stay apart."""
    handles = []
    for i, s in enumerate(summaries):
        xs, ys, es, _ = _points(s, x_of)
        xs = [x * 1.015 ** (i - (len(summaries) - 1) / 2) for x in xs]
        if xs:
            handles.append(ax.errorbar(xs, ys, yerr=es, color=COLORS[i % len(COLORS)], marker=MARKERS[i % len(MARKERS)],
                                       markersize=6, capsize=3, linewidth=1.5, label=f"{s['label']} (n={s['n']})"))
    ax.set_xscale("log")
    ax.grid(True, which="both", alpha=0.3)
    return handles


def _name_nets_on_top(ax, positions: list[tuple[float, str]], label) -> None:
    """Ticks at the nets' x positions: values below, net names above (nets closer than 4 % share
    one tick, so names of the same depth in several groups are written once)."""
    ticks: list[tuple[float, list[str]]] = []
    for x, name in sorted(positions):
        if ticks and x <= ticks[-1][0] * 1.04:
            if name not in ticks[-1][1]:
                ticks[-1][1].append(name)
        else:
            ticks.append((x, [name]))
    if not ticks or len(ticks) > 10:
        return  # too many depths to name without overlap; the table has them
    xs = [x for x, _ in ticks]
    ax.xaxis.set_major_locator(FixedLocator(xs))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([label(x) for x in xs])
    top = ax.secondary_xaxis("top")
    top.xaxis.set_major_locator(FixedLocator(xs))
    top.xaxis.set_minor_locator(NullLocator())
    top.set_xticklabels(["/".join(names) for _, names in ticks], fontsize=8)


def _positions(summaries: list[dict], x_of) -> list[tuple[float, str]]:
    """One x per net name: the median over the groups that have it (the same depth is the same
    architecture in every group, so its MACs agree and its latencies differ only by noise)."""
    by_name: dict[str, list[float]] = {}
    for s in summaries:
        for net in s["nets"]:
            if x_of(net) is not None:
                by_name.setdefault(net["name"], []).append(x_of(net))
    return [(statistics.median(xs), name) for name, xs in by_name.items()]


def tradeoff_figure(summaries: list[dict], split: str, dataset: str) -> Figure:
    """Top-1 against MACs, and against batch-1 latency when profiles exist."""
    def latency(net):
        return net["latency_ms"]["mean"] if net["latency_ms"] else None

    with_latency = [s for s in summaries if any(latency(n) is not None for n in s["nets"])]
    fig = Figure(figsize=(11 if with_latency else 6.2, 4.6))
    axes = fig.subplots(1, 2 if with_latency else 1, squeeze=False, sharey=True)[0]
    handles = _draw(axes[0], summaries, lambda net: net["macs"] or None)
    _name_nets_on_top(axes[0], _positions(summaries, lambda net: net["macs"] or None), human)
    axes[0].set_xlabel("MACs per image (log scale)")
    axes[0].set_ylabel(f"{split} top-1 (%), final epoch")
    axes[0].set_title("top-1 vs compute", pad=22)
    if with_latency:
        _draw(axes[1], summaries, latency)
        _name_nets_on_top(axes[1], _positions(summaries, latency), lambda x: f"{x:.3g}")
        axes[1].set_xlabel("latency, batch 1 (ms, median, log scale)")
        axes[1].set_title("top-1 vs latency (standalone net)", pad=22)
    missing = [s["label"] for s in summaries if s not in with_latency]
    hint = f"\nno latency for {', '.join(missing)}: {PROFILE_HINT}" if missing else ""
    fig.suptitle(f"{dataset}: top-1 of the final weights, mean ± std over seeds (error bars){hint}", fontsize=9,
                 color="0.35")
    longest = max((len(h.get_label()) for h in handles), default=1)
    ncol = max(1, min(len(handles), int(fig.get_figwidth() * 12 / (longest + 6))))  # about 12 characters an inch
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, frameon=False, fontsize=9)
    fig.tight_layout()
    return fig


def curves_figure(groups: list[Group], summaries: list[dict]) -> Figure:
    """Per group one column: top-1 per net over epochs (top, shared scale) and summed training loss."""
    fig = Figure(figsize=(4.3 * len(groups) + 0.6, 6.4))
    axes = fig.subplots(2, len(groups), squeeze=False, sharex="col")
    names = list(dict.fromkeys(n["name"] for s in summaries for n in s["nets"]))
    shown: list[float] = []
    for j, (group, summary) in enumerate(zip(groups, summaries)):
        c = curves(group)
        top, bottom = axes[0, j], axes[1, j]
        if j:
            top.sharey(axes[0, 0])
            bottom.sharey(axes[1, 0])
        for net, series in c["top1"].items():
            color = COLORS[names.index(net) % len(COLORS)] if net in names else "0.5"
            _line(top, series, color, net)
        if c["loss"]:
            _line(bottom, c["loss"], "0.2", "sum of loss terms")
            if max(c["loss"]["mean"]) > 10 * max(min(c["loss"]["mean"]), 1e-12):
                _log_y(bottom)
        if not c["top1"]:
            top.text(0.5, 0.5, "no metrics.jsonl", transform=top.transAxes, ha="center", color="0.4")
        top.set_title(f"{summary['label']} (n={summary['n']})", fontsize=10)
        top.set_ylabel(f"{c['split']} top-1 (%)")
        bottom.set_ylabel("training loss (sum of terms)")
        bottom.set_xlabel("epoch")
        _epoch_axis(bottom, c)
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
        shown += [v for series in c["top1"].values() for m, d in zip(series["mean"], series["std"]) for v in (m - d, m + d)]
    if shown:
        axes[0, 0].set_ylim(*fitted_range(shown, ceiling=100.0))  # shared by the columns
    fig.suptitle("per-epoch mean over seeds (band: ± std)", fontsize=9, color="0.35")
    fig.tight_layout()
    handles = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:  # below the plots, never over a curve
        fig.legend(list(handles.values()), list(handles), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(len(handles), 4), fontsize=8, frameon=False)
    return fig


def fitted_range(values: list[float], ceiling: float | None = None) -> tuple[float, float]:
    """y-limits that fit the values with a small margin (curves near 98 % are not squashed into a 0-100 axis)."""
    lo, hi = min(values), max(values)
    pad = max(0.08 * (hi - lo), 0.25)
    top = hi + pad if ceiling is None else min(hi + pad, ceiling + pad / 4)
    return lo - pad, top


def _epoch_axis(ax, c: dict) -> None:
    """Whole epochs on the x-axis, also for a run of one or two epochs."""
    epochs = sorted({e for series in c["top1"].values() for e in series["epoch"]})
    if epochs and epochs[-1] - epochs[0] < 3:
        ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
        ax.xaxis.set_major_locator(FixedLocator(range(epochs[0], epochs[-1] + 1)))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _log_y(ax) -> None:
    """A log y-axis labelled 0.1, 0.2, 0.5, 1, 2, 5 rather than 2x10^-1."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _line(ax, series: dict, color: str, label: str) -> None:
    ep, mean, std = series["epoch"], series["mean"], series["std"]
    ax.plot(ep, mean, color=color, marker="o" if len(ep) < 30 else None, markersize=3, linewidth=1.5, label=label)
    if any(std):
        ax.fill_between(ep, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=color,
                        alpha=0.15, linewidth=0)


def save_figure(fig, path: Path, dpi: int) -> None:
    """A PNG written whole (files.write_bytes)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    write_bytes(path, buffer.getvalue())


# -- the command -------------------------------------------------------------------------------

def build_report(run_dirs: list[Path], out_dir: Path, log=print) -> dict:
    """Read the runs, pool seeds per config, write report.md/json, tradeoff.png and curves.png."""
    runs = [read_run(d) for d in expand_run_dirs(run_dirs)]
    groups = group_runs(runs)
    summaries = [aggregate(g) for g in groups]
    comparison = compare(*summaries) if len(summaries) == 2 else None
    macs_note = runs[0].results.get("macs_note", "MACs for one image")
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DdnnError(f"cannot create report folder {out_dir}: {err.strerror}; choose another --out") from None
    paths = {"markdown": out_dir / run_files.REPORT_MD, "json": out_dir / run_files.REPORT_JSON,
             "tradeoff": out_dir / run_files.TRADEOFF_PNG, "curves": out_dir / run_files.CURVES_PNG}
    text = markdown(summaries, comparison, groups, macs_note)
    for note in filter(None, map(shared_seeds_note, summaries)):
        log(f"ddnn: warning: {note}")
    write_text(paths["markdown"], text)
    report = {"groups": summaries, "comparison": comparison, "macs_note": macs_note, "latency_note": latency_note(groups)}
    run_files.write_json(report, paths["json"])
    split = "/".join(sorted({s["split"] for s in summaries}))
    dataset = "/".join(sorted({str(s["dataset"]) for s in summaries}))
    save_figure(tradeoff_figure(summaries, split, dataset), paths["tradeoff"], dpi=130)
    save_figure(curves_figure(groups, summaries), paths["curves"], dpi=110)
    log(text)
    for kind, path in paths.items():
        log(f"{kind}: {path}")
    return {**paths, "groups": summaries, "comparison": comparison}
