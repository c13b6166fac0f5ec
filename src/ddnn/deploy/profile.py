"""`ddnn profile`: what each net costs on a device: parameters, MACs, latency and peak memory.

Latency is measured twice per net and batch size, side by side: the sub-net run inside the DDNN
(`forward(x, subnet)`) and its extracted standalone module. Their ratio shows what switching costs.
"""

import contextlib
import csv
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ddnn import run_files
from ddnn.data import InputSpec
from ddnn.deploy.latency import time_interleaved
from ddnn.deploy.memory import peak_forward_memory
from ddnn.engine.runtime import DTYPES, resolve_device
from ddnn.errors import DdnnError
from ddnn.files import write_text
from ddnn.methods import Method
from ddnn.models.cost import MACS_NOTE, net_cost
from ddnn.text import human, markdown_table


@dataclass
class ProfileOptions:
    device: str = "cpu"
    threads: int = 0  # 0: torch's default
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; channels_last when not fp32)
    batch_sizes: tuple[int, ...] = (1, 32)
    warmup: int = 5
    repeats: int = 30


def _context(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "fp16" and device.type == "cpu":
        raise DdnnError("--precision fp16 is for CUDA; on a CPU use bf16 or fp32")
    return lambda: torch.autocast(device.type, dtype=DTYPES[precision])


def profile_method(method: Method, spec: InputSpec, opts: ProfileOptions,
                   accuracy: dict[str, dict[str, float | None]] | None = None) -> dict:
    """The profile of every net of `method` (docs/deploy.md shows its fields); `accuracy` per net."""
    if any(b < 1 for b in opts.batch_sizes) or opts.repeats < 1 or opts.warmup < 0:
        raise DdnnError("batch sizes and --repeats must be >= 1 and --warmup >= 0")
    device = resolve_device(opts.device)
    if opts.threads > 0:
        torch.set_num_threads(opts.threads)
    context = _context(device, opts.precision)
    fmt = torch.contiguous_format if opts.precision == "fp32" else torch.channels_last
    method = method.eval().to(device).to(memory_format=fmt)
    gen = torch.Generator().manual_seed(0)
    inputs = {b: torch.randn(b, *spec.shape, generator=gen).to(device).contiguous(memory_format=fmt)
              for b in opts.batch_sizes}
    nets = {}
    for name, sub in method.nets().items():
        standalone = method.extract(name).eval()
        row = {"blocks": list(sub.blocks), **net_cost(standalone, spec.shape),
               **(accuracy or {}).get(name, {"top1": None, "val_top1": None}),
               "latency_ms": {}, "peak_memory_bytes": {}}
        standalone = standalone.to(device).to(memory_format=fmt)
        for b, x in inputs.items():
            inside, alone = time_interleaved([lambda t, n=name: method.predict(t, n), standalone], x,
                                             opts.warmup, opts.repeats, context)
            row["latency_ms"][str(b)] = {"standalone": alone, "ddnn": inside,
                                         "ratio": inside["median"] / alone["median"]}
            with context():
                row["peak_memory_bytes"][str(b)] = peak_forward_memory(standalone, x)
        nets[name] = row
    profile = {"device": str(device), "device_name": _device_name(device), "threads": torch.get_num_threads(),
               **{k: v for k, v in asdict(opts).items() if k not in ("device", "threads")},
               "batch_sizes": list(opts.batch_sizes), "torch": torch.__version__, "macs_note": MACS_NOTE,
               "cpus": os.cpu_count(), "load_average": _load_average(), "nets": nets}
    profile["busy"] = busy_note(profile)
    return profile


BUSY_SPREAD = 2.0  # a net's p90/p10 latency above this: other work shared the machine while it was timed


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)  # the last minute: the time the profile took, or most of it
    except (OSError, AttributeError):
        return None


def busy_note(profile: dict) -> str | None:
    """Why the machine looked busy while `profile` was measured (wide latency spreads, a load average
    above the core count), or None: such latencies are too high and unsteady to choose a net by."""
    spreads = [(lat[kind]["p90"] / lat[kind]["p10"], name, b) for name, n in profile["nets"].items()
               for b, lat in n["latency_ms"].items() for kind in ("standalone", "ddnn") if lat[kind]["p10"] > 0]
    reasons = []
    worst = max(spreads, default=None)
    if worst is not None and worst[0] > BUSY_SPREAD:
        reasons.append(f"latency p90/p10 up to {worst[0]:.1f}x, {worst[1]} at batch {worst[2]}")
    load, cpus = profile.get("load_average"), profile.get("cpus")
    if load is not None and cpus and load > cpus:
        reasons.append(f"load average {load:g} on {cpus} cores")
    if not reasons:
        return None
    return (f"the machine looked busy while profiling ({'; '.join(reasons)}): the latencies may be high and "
            "unsteady; profile again on a quiet machine, with --threads below the idle cores, or with more --repeats")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def format_profile(profile: dict) -> str:
    """The profile as a Markdown table: one row per net, latency median [p10-p90] per batch size."""
    sizes = [str(b) for b in profile["batch_sizes"]]
    head = ["net", "blocks", "top1 %", "params", "MACs"]
    for b in sizes:
        head += [f"ms @{b} [p10-p90]", f"DDNN/alone @{b}", f"peak mem @{b}"]
    rows = [tuple(head)]
    for name, n in profile["nets"].items():
        row = [name, "-".join(map(str, n["blocks"])), "-" if n.get("top1") is None else f"{n['top1']:.2f}",
               human(n["params"]), human(n["macs"])]
        for b in sizes:
            lat = n["latency_ms"][b]
            s = lat["standalone"]
            row += [f"{s['median']:.2f} [{s['p10']:.2f}-{s['p90']:.2f}]", f"{lat['ratio']:.3f}",
                    human(n["peak_memory_bytes"][b], binary=True) + "B"]
        rows.append(tuple(row))
    note = (f"{profile['device_name']} ({profile['device']}), {profile['threads']} threads, {profile['precision']}; "
            f"median of {profile['repeats']} runs after {profile['warmup']} warm-up; ms = the extracted "
            f"standalone net; DDNN/alone = the sub-net run inside the DDNN over standalone (1.0 = switching "
            f"is free); peak mem = weights + input + activations; {MACS_NOTE}")
    return "\n".join(markdown_table(rows) + [note])


def write_profile(profile: dict, out: Path) -> list[Path]:
    """profile.json and profile.csv (one row per net) in the folder `out`."""
    run_files.write_json(profile, out / run_files.PROFILE_JSON)
    fields = ["net", "blocks", "params", "macs", "top1", "val_top1"]
    for b in map(str, profile["batch_sizes"]):
        fields += [f"ms_b{b}_median", f"ms_b{b}_p10", f"ms_b{b}_p90", f"ms_b{b}_ddnn_median",
                   f"ratio_b{b}", f"peak_bytes_b{b}"]
    fh = io.StringIO(newline="")
    writer = csv.DictWriter(fh, fieldnames=fields)
    writer.writeheader()
    for name, n in profile["nets"].items():
        row = {"net": name, "blocks": "-".join(map(str, n["blocks"])), "params": n["params"],
               "macs": n["macs"], "top1": n.get("top1"), "val_top1": n.get("val_top1")}
        for b in map(str, profile["batch_sizes"]):
            lat = n["latency_ms"][b]
            row |= {f"ms_b{b}_median": lat["standalone"]["median"], f"ms_b{b}_p10": lat["standalone"]["p10"],
                    f"ms_b{b}_p90": lat["standalone"]["p90"], f"ms_b{b}_ddnn_median": lat["ddnn"]["median"],
                    f"ratio_b{b}": lat["ratio"], f"peak_bytes_b{b}": n["peak_memory_bytes"][b]}
        writer.writerow(row)
    write_text(out / run_files.PROFILE_CSV, fh.getvalue())
    return [out / run_files.PROFILE_JSON, out / run_files.PROFILE_CSV]
