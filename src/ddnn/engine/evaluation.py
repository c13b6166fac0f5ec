"""A trained method rebuilt from its checkpoint, and `ddnn eval`: every net re-evaluated."""

from pathlib import Path

from ddnn.checkpoint import load_checkpoint
from ddnn.config import saved_config
from ddnn.data import InputSpec, Normalizer, load_dataset
from ddnn.engine.evaluate import evaluate
from ddnn.engine.run_folder import check_belongs
from ddnn.engine.runtime import resolve_runtime, set_threads
from ddnn.engine.setup import build_method
from ddnn.engine.summary import format_table
from ddnn.errors import DdnnError
from ddnn.methods import Method
from ddnn.models.calibrate import apply_statistics


def load_method(path: Path, calibrated: bool = True) -> tuple[Method, dict]:
    """The trained method of a checkpoint (on CPU, eval mode) and the checkpoint itself.

    BN statistics stored by `ddnn calibrate` are installed unless `calibrated` is False.
    """
    ckpt = load_checkpoint(path)
    cfg = saved_config(ckpt["config"])
    method = build_method(cfg, InputSpec.from_dict(ckpt["input"]))
    try:
        method.load_state_dict(ckpt["state"])
        if calibrated:
            for name, stats in ckpt.get("calibration", {}).get("nets", {}).items():
                apply_statistics(method, name, stats)
    except (RuntimeError, AttributeError, KeyError) as err:
        raise DdnnError(f"checkpoint {path} does not match its own config ({str(err).splitlines()[0][:160]})") from None
    return method.eval(), ckpt


def evaluate_checkpoint(path: Path, split: str = "test", log=print, folder: Path | None = None,
                        threads: int = 0) -> dict:
    """Top-1 of every net of the checkpoint on `split`, with its costs; logs the table. `folder`: the
    run folder it was taken from (a checkpoint copied in from another run is refused); `threads`: torch
    threads (0: the run's runtime.threads)."""
    method, ckpt = load_method(path)
    if folder is not None:
        check_belongs(Path(folder), ckpt, path)
    cfg = saved_config(ckpt["config"])
    spec = InputSpec.from_dict(ckpt["input"])
    data = spec.check(load_dataset(cfg.data))
    target = data.val if split == "val" else data.test
    if target is None:
        raise DdnnError(f"the run has no {split} split (data.val_fraction is 0); use --split test")
    runtime = resolve_runtime(cfg.runtime)
    set_threads(threads)
    method = runtime.prepare(method)
    top1 = evaluate(method, target, Normalizer(spec.mean, spec.std), runtime, cfg.data.eval_batch_size)
    costs = method.net_costs(spec.shape)
    results = {"checkpoint": str(path), "epoch": ckpt["epoch"], "split": split, "selected_on": "val",
               "nets": {name: {**costs[name], "top1": top1[name]} for name in top1}}
    cal = ckpt.get("calibration")
    note = f"; BN statistics calibrated on {cal['images']} training images (ddnn calibrate)" if cal else ""
    log(f"{path} (epoch {ckpt['epoch']}), {cfg.method.name} on {cfg.data.name}{note}")
    log(format_table(results))
    return results
