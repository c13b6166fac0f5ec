"""The deploy subcommands (`profile`, `export`, `select`, `calibrate`) behind the CLI."""

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

from ddnn import run_files
from ddnn.checkpoint import save_checkpoint, sha256_of
from ddnn.deploy.provenance import check_current, checkpoint_identity, stale_files
from ddnn.data import Normalizer, batches
from ddnn.engine.evaluate import evaluate
from ddnn.engine.runtime import Runtime, set_threads
from ddnn.errors import DdnnError
from ddnn.text import human, markdown_table

CPU_FP32 = Runtime(torch.device("cpu"), None, False)


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise DdnnError(f"--batch-sizes '{text}' must be comma-separated integers, e.g. 1,32") from None
    if not sizes or any(b < 1 for b in sizes):
        raise DdnnError(f"--batch-sizes '{text}' must be positive integers, e.g. 1,32")
    return sizes


def _accuracy(run) -> dict[str, dict[str, float | None]]:
    """Test and validation top-1 of the loaded checkpoint, per net (fp32, CPU)."""
    data = run.load_data()
    normalize = Normalizer(run.spec.mean, run.spec.std)
    bs = run.cfg.data.eval_batch_size
    test = evaluate(run.method, data.test, normalize, CPU_FP32, bs)
    val = evaluate(run.method, data.val, normalize, CPU_FP32, bs) if data.val is not None else {}
    return {name: {"top1": test[name], "val_top1": val.get(name)} for name in test}


def cmd_profile(args: argparse.Namespace) -> int:
    from ddnn.deploy.profile import ProfileOptions, format_profile, profile_method, write_profile

    set_threads(args.threads)
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise DdnnError(f"--out {args.out} is a file; profile writes {run_files.PROFILE_JSON} and "
                        f"{run_files.PROFILE_CSV} into a folder: give a folder")
    opts = ProfileOptions(device=args.device, threads=args.threads, precision=args.precision,
                          batch_sizes=_batch_sizes(args.batch_sizes), warmup=args.warmup, repeats=args.repeats)
    if args.run:
        from ddnn.deploy.run import open_run

        if args.config or args.overrides:
            raise DdnnError("give either --run DIR or a config (-c / key=value), not both")
        run = open_run(Path(args.run), args.which)
        method, spec, accuracy = run.method, run.spec, _accuracy(run)
        out = Path(args.out) if args.out else run.folder
        source = {"run": str(run.folder), "checkpoint": str(run.checkpoint), "epoch": run.ckpt["epoch"],
                  **checkpoint_identity(run)}
    else:
        from ddnn.config import load_config
        from ddnn.engine.setup import build_method, check_config, load_data

        cfg = load_config(args.config, args.overrides)
        check_config(cfg)
        torch.manual_seed(cfg.train.seed)
        _, spec = load_data(cfg)
        method, accuracy = build_method(cfg, spec), None
        out = Path(args.out) if args.out else Path("profiles") / cfg.name
        source = {"config": cfg.name, "weights": "random init (latency and memory do not depend on them)"}
    profile = {**source, **profile_method(method, spec, opts, accuracy)}
    paths = write_profile(profile, out)
    print(format_profile(profile))
    print(f"written: {', '.join(map(str, paths))}")
    if profile["busy"]:
        print(f"ddnn: warning: {profile['busy']}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ddnn.deploy.export import SUFFIX, export_net
    from ddnn.deploy.run import open_run

    switchable = getattr(args, "switchable", False)  # callers that build the namespace may leave it out
    if switchable and (args.subnet or args.all):
        raise DdnnError("--switchable holds every depth of the DDNN in one file; leave out --subnet and --all")
    if args.subnet and args.all:
        raise DdnnError("give --subnet NAME or --all, not both")
    if args.verify_images < 1:
        raise DdnnError("--verify-images must be >= 1")
    set_threads(getattr(args, "threads", 0))
    fmt = args.format or ("both" if switchable else "torchscript")
    formats = ["torchscript", "onnx"] if fmt == "both" else [fmt]
    run = open_run(Path(args.run), args.which)
    data = run.load_data()
    if switchable:
        export_switchable_files(run, data, formats, Path(args.out) if args.out else None, args.verify_images)
        return 0
    if args.all:
        names = list(run.method.nets())
    elif args.subnet:
        names = [run.check_net(args.subnet)]
    else:
        names = [_default_net(run, data)]
    images = data.test.images[: args.verify_images]
    one_file = not args.all and len(formats) == 1
    folder = _out_folder(args.out, one_file) or run.folder / run_files.EXPORT
    if args.out and one_file and not folder.is_dir():
        targets = [(names[0], formats[0], Path(args.out))]
    else:
        targets = [(name, fmt, folder / f"{name}{SUFFIX[fmt]}") for fmt in formats for name in names]
    for name, fmt, path in targets:
        info = export_net(run, name, fmt, path, images)
        print(f"{path}: {name} ({'-'.join(map(str, info['blocks']))}) as {fmt}, verified on "
              f"{info['verified']['images']} test images, max abs diff {info['verified']['max_abs_diff']:.2e} "
              f"(<= {info['verified']['tolerance']:g}); input float [0,1] NCHW {info['input']['shape'][1:]}, "
              f"normalisation included; description: {path}.json")
    return 0


def export_switchable_files(run, data, formats: list[str], out: Path | None = None,
                            verify_images: int = 256) -> dict[str, Path]:
    """`ddnn export --switchable`: one verified file per format (`out`: the file when one format, else a
    folder; default RUN/export/), and a summary line per file and depth."""
    from ddnn.deploy.export import SUFFIX
    from ddnn.deploy.switchable import export_switchable, stem, switchable_net

    switchable_net(run)  # refused before anything is evaluated
    accuracy = _accuracy(run)
    images = data.test.images[:verify_images]
    folder = _out_folder(str(out) if out else None, one_file=len(formats) == 1) or run.folder / run_files.EXPORT
    if out and len(formats) == 1 and not folder.is_dir():
        targets = {formats[0]: Path(out)}
    else:
        targets = {fmt: folder / f"{stem(run)}{SUFFIX[fmt]}" for fmt in formats}
    for fmt, path in targets.items():
        info = export_switchable(run, fmt, path, images, accuracy)
        print(f"{path}: {len(info['depths'])} depths in one {fmt} file ({human(info['bytes'], binary=True)}B, "
              f"{human(info['params_in_file'])} parameters), each verified on {info['verified']['images']} test images; "
              f"input float [0,1] NCHW {info['input']['shape'][1:]} + depth index (int64); description: {path}.json")
        for d in info["depths"]:
            print(f"  depth {d['index']}: {d['name']} ({'-'.join(map(str, d['blocks']))}), max abs diff "
                  f"{d['max_abs_diff']:.2e} (<= {info['verified']['tolerance']:g}), test top-1 {d['top1']:.2f} %, "
                  f"{human(d['params'])} params, {human(d['macs'])} MACs")
    return targets


def _out_folder(out: str | None, one_file: bool) -> Path | None:
    """Export's --out: a file when one file is written and OUT is not a folder, else a folder (an
    existing file there is refused: several files go into a folder). None: the default folder."""
    if not out:
        return None
    path = Path(out)
    if not one_file and path.exists() and not path.is_dir():
        raise DdnnError(f"--out {out} is a file, but this export writes several files (--all or both formats); "
                        "give a folder")
    return path


def _default_net(run, data) -> str:
    """The run's own choice of net when none is named (online: the best student on the val split)."""
    val: dict[str, float] = {}

    def val_top1() -> dict[str, float]:
        if data.val is None:
            raise DdnnError("the run has no validation split to choose its best net on (data.val_fraction is 0); "
                            "give --subnet NAME")
        val.update(evaluate(run.method, data.val, Normalizer(run.spec.mean, run.spec.std), CPU_FP32,
                            run.cfg.data.eval_batch_size))
        return val

    name = run.method.default_net(val_top1)
    if name is None:
        raise DdnnError(f"give --subnet NAME or --all (a {run.cfg.method.name} run has no single default net; "
                        f"its nets: {', '.join(run.method.nets())})")
    print(f"no --subnet: exporting {name}, the run's default net (highest validation top-1 among its students on "
          f"{run.checkpoint.name}: {val[name]:.2f} %)" if val else f"no --subnet: exporting {name}, the run's default net")
    return name


def cmd_select(args: argparse.Namespace) -> int:
    from ddnn.deploy.select import Budget, explain, select

    folder = Path(args.run)
    path = folder / run_files.PROFILE_JSON
    run_files.require_run_folder(folder)
    if not path.exists():
        raise DdnnError(f"{folder} has no {path.name}; run `ddnn profile --run {folder}` first "
                        "(select ranks the nets by the accuracy and latency it measures)")
    profile = run_files.read_json(path, f"run `ddnn profile --run {folder}` again")
    check_current(profile, folder, "profile.json", f"run `ddnn profile --run {folder}` again")
    budget = Budget(args.max_latency_ms, args.max_macs, args.max_params, args.batch)
    if args.max_latency_ms is not None and profile.get("busy"):
        print(f"ddnn: warning: its latencies may mislead: {profile['busy']}", file=sys.stderr)
    choice = select(profile, budget)
    # with --json, stdout is the JSON alone (for a pipe); the explanation goes to stderr
    print(explain(choice, budget), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(choice, indent=2))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ddnn.models.calibrate import calibrate
    from ddnn.deploy.run import open_run

    if args.batches < 1 or (args.batch_size is not None and args.batch_size < 1):
        raise DdnnError("--batches and --batch-size must be >= 1")
    set_threads(getattr(args, "threads", 0))
    run = open_run(Path(args.run), args.which, calibrated=False)
    data = run.load_data()
    target = data.val if args.split == "val" else data.test
    if target is None:
        raise DdnnError(f"the run has no {args.split} split (data.val_fraction is 0); use --split test")
    normalize = Normalizer(run.spec.mean, run.spec.std)
    bs = args.batch_size or run.cfg.data.batch_size
    eval_bs = run.cfg.data.eval_batch_size
    before = evaluate(run.method, target, normalize, CPU_FP32, eval_bs)

    def stream():  # training images, no augmentation: the statistics the test images will meet
        return (x for x, _ in itertools.islice(batches(data.train, bs, normalize, shuffle_seed=args.seed), args.batches))

    stats = calibrate(run.method, stream)
    after = evaluate(run.method, target, normalize, CPU_FP32, eval_bs)
    used = [len(x) for x in stream()]
    images, n_batches = sum(used), len(used)
    run.ckpt["calibration"] = {"nets": stats, "batches": n_batches, "batch_size": bs, "images": images,
                               "seed": args.seed, "split": args.split, "top1_before": before, "top1_after": after}
    made_from = sha256_of(run.checkpoint)
    save_checkpoint(run.ckpt, run.checkpoint)
    stale = stale_files(run.folder, run.checkpoint, made_from)
    rows = [("net", f"{args.split} top1 before", "after", "change")]
    rows += [(n, f"{before[n]:.2f}", f"{after[n]:.2f}", f"{after[n] - before[n]:+.2f}") for n in before]
    print("\n".join(markdown_table(rows)))
    print(f"BN statistics of every net re-estimated from {images} training images ({n_batches} batches of up to {bs}, "
          f"bn={run.cfg.model.bn}); stored in {run.checkpoint} and used by eval, profile and export")
    if stale:
        print(f"made from {run.checkpoint.name} before this calibration, now out of date (select refuses a stale "
              f"profile.json): {', '.join(stale)}; run ddnn profile / ddnn export again", file=sys.stderr)
    return 0


def add_parsers(sub) -> None:
    """Register the deploy subcommands on the CLI's subparsers."""
    from ddnn.deploy.select import count

    def run_args(p, which_default="best"):
        p.add_argument("--run", required=True, help="run folder written by ddnn train")
        p.add_argument("--which", choices=["best", "last"], default=which_default, help="checkpoint (default best)")
        p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's default)")

    p = sub.add_parser("profile", help="params, MACs, latency (inside the DDNN and standalone) and peak memory per net")
    p.add_argument("--run", help="run folder (else profile a config's nets with random weights)")
    p.add_argument("--which", choices=["best", "last"], default="best", help="checkpoint of --run (default best)")
    p.add_argument("-c", "--config", help="config to profile without training (default: the bundled default)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (config mode)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's default)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--batch-sizes", default="1,32", help="comma-separated (default 1,32)")
    p.add_argument("--repeats", type=int, default=30, help="timed runs per net and batch size (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--out", help="folder for profile.json/.csv (default: the run folder, or profiles/<config>)")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("export", help="a standalone TorchScript/ONNX file of a net, verified against the DDNN")
    run_args(p)
    p.add_argument("--subnet", help="net name (see the run's results table); default: the run's default net "
                   "(online: the best student on the val split), where the method has one")
    p.add_argument("--all", action="store_true", help="export every net")
    p.add_argument("--switchable", action="store_true",
                   help="one file holding every depth of the DDNN, the depth chosen by an input (see ddnn.runtime)")
    p.add_argument("--format", choices=["torchscript", "onnx", "both"],
                   help="default torchscript, or both with --switchable")
    p.add_argument("--out", help="file (one file written) or folder (--all, or both formats); default RUN/export/")
    p.add_argument("--verify-images", type=int, default=256, help="test images the file is checked on (default 256)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("select", help="the most accurate net of a profiled run within a budget")
    p.add_argument("--run", required=True, help="run folder holding profile.json (ddnn profile --run)")
    p.add_argument("--max-latency-ms", type=float, help="standalone median latency budget")
    p.add_argument("--max-macs", type=count, help="MACs budget (e.g. 3e7 or 30M)")
    p.add_argument("--max-params", type=count, help="parameter budget (e.g. 2e5 or 200K)")
    p.add_argument("--batch", type=int, default=1, help="batch size whose latency counts (default 1)")
    p.add_argument("--json", action="store_true", help="print the choice as JSON on stdout (the explanation on stderr)")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("calibrate", help="re-estimate each net's BN statistics from training batches")
    run_args(p)
    p.add_argument("--batches", type=int, default=20, help="training batches (default 20)")
    p.add_argument("--batch-size", type=int, help="default: the run's data.batch_size")
    p.add_argument("--split", choices=["test", "val"], default="test", help="split for before/after accuracy")
    p.add_argument("--seed", type=int, default=0, help="which training images are drawn")
    p.set_defaults(func=cmd_calibrate)
