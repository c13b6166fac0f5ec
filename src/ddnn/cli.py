"""Command line: `ddnn train | eval | profile | export | select | calibrate | serve | report | list`. Bad input ends in one line on stderr and exit code 2."""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ddnn import run_files
from ddnn.errors import DdnnError


def _cmd_train(args: argparse.Namespace) -> int:
    from ddnn.config import load_config
    from ddnn.experiments.pipeline import Pipeline, is_pipeline, run_pipeline
    from ddnn.experiments.seeds import parse_seeds, train

    if args.config and is_pipeline(args.config):  # several stages, e.g. teacher -> assistant -> student
        if args.resume:
            raise DdnnError("--resume is for one run; a pipeline resumes when the same command is run again")
        name = Pipeline(args.config, args.overrides).name
        out = Path(args.out) if args.out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_pipeline(args.config, args.overrides, out, parse_seeds(args.seeds) if args.seeds else None)
        return 0
    if args.resume and args.resume != "auto":
        if args.out and Path(args.out) != Path(args.resume):
            raise DdnnError("give the run folder once: --resume DIR, or --out DIR --resume auto")
        if not Path(args.resume).is_dir():
            what = "is a file, not a run folder" if Path(args.resume).exists() else "no such run folder"
            raise DdnnError(f"--resume {args.resume}: {what}; give a run folder that holds last.pt, "
                            "or --resume auto with --out to start or continue a run")
        args.out = args.resume
    elif args.resume == "auto" and not args.out:
        raise DdnnError("--resume auto needs --out DIR: the folder to continue (or start) the run in")
    # `--resume DIR` alone continues the run with its own config; anything given must agree with it
    given_dir = args.resume not in (None, "auto")
    if given_dir and not (args.config or args.overrides or args.seeds):
        cfg = None  # the run's own config, from its checkpoint
    elif given_dir and not (args.config or args.seeds):  # e.g. runtime.threads=2: laid on the run's own config
        from ddnn.engine.resume import resume_config

        cfg = resume_config(Path(args.resume), args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
    if cfg is not None and args.seeds:
        cfg.seeds = parse_seeds(args.seeds)
    out = Path(args.out) if args.out else Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    train(cfg, out, resume=bool(args.resume))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ddnn.engine.evaluation import evaluate_checkpoint

    from ddnn.engine.runtime import set_threads

    if bool(args.run) == bool(args.ckpt):
        raise DdnnError("give exactly one of --run DIR or --ckpt FILE")
    set_threads(args.threads)
    path = Path(args.ckpt) if args.ckpt else Path(args.run) / run_files.checkpoint(args.which)
    if args.run:
        run_files.require_run_folder(Path(args.run))
    if args.run:
        from ddnn.files import remove_leftovers

        remove_leftovers(Path(args.run))  # temp files of killed saves (their writers' processes are gone)
    results = evaluate_checkpoint(path, args.split, folder=Path(args.run) if args.run else None, threads=args.threads)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ddnn.experiments.report import build_report

    build_report([Path(p) for p in args.runs], Path(args.out))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from ddnn.deploy.serve.app import Limits
        from ddnn.deploy.serve.server import ServeOptions, serve
    except ImportError as err:
        raise DdnnError(f"ddnn serve needs the serve extra ({err.name} is not installed): "
                        "pip install \"ddnn[serve]\"") from None
    limits = Limits(max_body_bytes=args.max_body_kib * 1024, max_images=args.max_images)
    return serve(ServeOptions(Path(args.source), args.host, args.port, args.depth, args.p99_ms, args.headroom,
                              args.max_batch, limits, args.threads, args.which))


def _cmd_list(args: argparse.Namespace) -> int:
    import ddnn.data  # noqa: F401  (registration)
    import ddnn.methods  # noqa: F401
    from ddnn.config import bundled_configs
    from ddnn.models import FAMILIES
    from ddnn.registry import DATASETS, METHODS, MODELS

    for title, reg in (("models", MODELS), ("methods", METHODS), ("datasets", DATASETS)):
        print(f"{title}:")
        for name in reg.names():
            print(f"  {name:<18} {reg.describe(name)}")
    print("named sub-nets (model.subnets), per family:")
    for fam in FAMILIES.values():
        print(f"  {fam.name:<18} " + ", ".join(f"{n} {list(b)}" for n, b in fam.depths.items()))
    print("bundled configs (ddnn train -c NAME):")
    for name in bundled_configs():
        print(f"  {name}")
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse with ddnn's error style: one line naming the problem and where to look, exit code 2."""

    def error(self, message: str):
        print(f"ddnn: error: {message} (see: {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="ddnn", description="Depth-level dynamic networks with embedded KD.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a config (default: DDNN ResNet-20 holding ResNet-14, d1-1-2 and ResNet-8 + EKD on embedded MNIST-5k)")
    p.add_argument("-c", "--config", help="YAML path or bundled config name (see `ddnn list`)")
    p.add_argument("--out", help="run folder (default runs/<name>-<timestamp>)")
    p.add_argument("--seeds", help="e.g. 0,1,2: one run per seed in OUT/seed<S>, then mean ± std (config key `seeds`)")
    p.add_argument("--resume", metavar="DIR|auto",
                   help="continue the run in DIR from its last.pt (its own config); auto: continue --out if it "
                        "holds a run, else start it there")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=0.05")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="re-evaluate every net of a run or checkpoint")
    p.add_argument("--run", help="run folder")
    p.add_argument("--ckpt", help="checkpoint file")
    p.add_argument("--which", choices=["best", "last"], default="best", help="checkpoint of --run (default best)")
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: the run's runtime.threads)")
    p.set_defaults(func=_cmd_eval)

    from ddnn.deploy.commands import add_parsers

    add_parsers(sub)

    p = sub.add_parser("serve", help="serve a switchable file (or a run folder's) over HTTP: POST /predict, "
                       "GET /health, GET /metrics")
    p.add_argument("source", metavar="FILE|RUN_DIR", help="a file from `ddnn export --switchable` (.onnx or "
                   ".torchscript.pt), or a run folder: its export/*-switchable.onnx, exported first when missing")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="default 8000")
    policy = p.add_mutually_exclusive_group()
    policy.add_argument("--depth", help="run every request at this depth (index or name); default: the most "
                        "accurate depth (validation top-1)")
    policy.add_argument("--p99-ms", type=float, help="latency target: each batch runs at the most accurate depth "
                        "expected to keep every request it touches within it (measured latency + the queue)")
    p.add_argument("--headroom", type=float, default=0.8, help="with --p99-ms, plan on this fraction of the target, "
                   "leaving the rest for the tail (default 0.8)")
    p.add_argument("--max-batch", type=int, default=8, help="most images per model call (default 8)")
    p.add_argument("--max-images", type=int, default=32, help="most images in one request (default 32)")
    p.add_argument("--max-body-kib", type=int, default=1024, help="largest request body in KiB (default 1024)")
    p.add_argument("--threads", type=int, default=0, help="model threads (default: onnxruntime's own choice)")
    p.add_argument("--which", choices=["best", "last"], default="best", help="a run folder's checkpoint (default best)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("report", help="plots and a table of one or more runs (seeds aggregated as mean ± std)")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders, or folders of run folders")
    p.add_argument("--out", default="report", help="output folder (default ./report)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("list", help="registered models, methods, datasets, named sub-nets and configs")
    p.set_defaults(func=_cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DdnnError as err:
        if args.debug:
            raise
        if os.environ.get("RANK", "0") == "0":  # under torchrun every process hits the same error; say it once
            print(f"ddnn: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # an I/O failure no check foresaw: still one line naming the file
        if args.debug:
            raise
        from ddnn.files import NO_SPACE, os_error

        if os.environ.get("RANK", "0") == "0":
            where = err.filename or "a file"
            text = os_error(err, where) if err.errno in NO_SPACE else f"{err.strerror or err}: {where}"
            print(f"ddnn: error: {text} (--debug shows where it happened)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":
            print("ddnn: interrupted; the run folder keeps the last saved checkpoint", file=sys.stderr)
        return 130
