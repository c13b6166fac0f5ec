"""Exact resume: a real training process killed with SIGKILL at several moments and resumed each time
ends with the same weights and metrics as a run that was never interrupted."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ddnn.checkpoint import load_checkpoint, save_checkpoint
from ddnn.experiments import train
from ddnn.errors import DdnnError

# Synthetic data big enough that an epoch lasts long enough to be killed in the middle of one.
ARGS = ["name=resume", "data.name=synthetic", "data.synthetic.size=800", "data.synthetic.image_size=16",
        "data.synthetic.classes=4", "data.batch_size=32", "data.val_fraction=0.2", "data.test_fraction=0.2",
        "model.name=resnet14", "model.subnets=[resnet8]", "model.widths=[4,8,8]", "train.epochs=5",
        "optim.lr=0.05", "schedule.warmup_epochs=0.5", "runtime.progress=false", "runtime.threads=1"]


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "ddnn", *argv]


def epochs_done(out: Path) -> int:
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def kill_when(out: Path, lines: int, delay: float, limit: float = 240) -> tuple[bool, int]:
    """Start (or continue) the run, SIGKILL it `delay` s after metrics.jsonl has `lines` lines.
    Returns (killed while running, epochs in last.pt after the kill)."""
    proc = subprocess.Popen(cli("train", "--out", str(out), "--resume", "auto", *ARGS),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    start = time.monotonic()
    while proc.poll() is None and epochs_done(out) < lines and time.monotonic() - start < limit:
        time.sleep(0.005)
    time.sleep(delay)
    running = proc.poll() is None
    if running:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    last = out / "last.pt"
    return running, load_checkpoint(last)["epoch"] if last.exists() else 0


def strip_seconds(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "run"
    subprocess.run(cli("train", "--out", str(out), *ARGS), check=True, capture_output=True)
    return out


def test_killed_and_resumed_run_equals_an_uninterrupted_one(uninterrupted, tmp_path):
    out = tmp_path / "killed"
    # moments: while starting up (before any checkpoint), just after epoch 1 was logged (mid-save or
    # early in epoch 2), in the middle of epoch 3, and right as epoch 4 is logged
    kills = [kill_when(out, lines, delay) for lines, delay in ((0, 2.0), (1, 0.0), (2, 0.15), (4, 0.0))]
    assert sum(running for running, _ in kills) >= 3, kills  # the process really was killed mid-run
    assert len({epoch for _, epoch in kills}) >= 2, kills  # at different points of training
    done = subprocess.run(cli("train", "--out", str(out), "--resume", "auto", *ARGS), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    a, b = load_checkpoint(uninterrupted / "last.pt"), load_checkpoint(out / "last.pt")
    assert a["epoch"] == b["epoch"] == 5
    for key, value in a["state"].items():
        assert torch.equal(value, b["state"][key]), key
    for group_a, group_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(group_a["momentum_buffer"], group_b["momentum_buffer"])
    assert strip_seconds(out) == strip_seconds(uninterrupted)
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (uninterrupted, out))
    assert ra["nets"] == rb["nets"] and ra["best_epoch"] == rb["best_epoch"]
    leftovers = sorted(p.name for p in out.iterdir())
    assert leftovers == ["best.pt", "config.yaml", "last.pt", "metrics.jsonl", "results.json"], leftovers


def test_resume_from_a_corrupt_last_uses_the_previous_and_still_ends_equal(uninterrupted, tmp_path, tiny_config):
    """last.pt damaged on disk: the run continues from last.prev.pt (one epoch earlier) and ends the same."""
    out = tmp_path / "run"
    running, _ = kill_when(out, 3, 0.0)
    assert load_checkpoint(out / "last.prev.pt")["epoch"] >= 1
    raw = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(raw[: len(raw) // 2])
    done = subprocess.run(cli("train", "--out", str(out), "--resume", "auto", *ARGS), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "using last.prev.pt" in done.stdout + done.stderr
    a, b = load_checkpoint(uninterrupted / "last.pt"), load_checkpoint(out / "last.pt")
    assert all(torch.equal(v, b["state"][k]) for k, v in a["state"].items())


def test_interrupted_run_resumes_exactly_in_process(tiny_config, tmp_path, monkeypatch):
    """Stop a run inside epoch 2 (as Ctrl-C would), resume it with its own config: same end as a whole run;
    resuming a finished run does nothing; a different config is refused."""
    from ddnn.engine.trainer import Trainer

    whole = train(tiny_config("train.epochs=3"), tmp_path / "whole", log=lambda *_: None)
    out = tmp_path / "run"
    real_epoch = Trainer.train_epoch

    def stop_in_epoch_2(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config("train.epochs=3"), out, log=lambda *_: None)
    monkeypatch.setattr(Trainer, "train_epoch", real_epoch)
    assert load_checkpoint(out / "last.pt")["epoch"] == 1 and not (out / "results.json").exists()

    said = []
    resumed = train(None, out, log=said.append, resume=True)
    assert any("resuming" in line and "after epoch 1/3" in line for line in said)
    assert resumed["nets"] == whole["nets"] and resumed["best_epoch"] == whole["best_epoch"]
    a, b = load_checkpoint(tmp_path / "whole" / "last.pt"), load_checkpoint(out / "last.pt")
    assert all(torch.equal(v, b["state"][k]) for k, v in a["state"].items())
    assert strip_seconds(out) == strip_seconds(tmp_path / "whole")

    said.clear()
    again = train(None, out, log=said.append, resume=True)
    assert "already finished its 3 epochs" in said[0] and again == resumed
    with pytest.raises(DdnnError, match=r"its config has optim.lr=0.05 but 0.1 was given"):
        train(tiny_config("train.epochs=3", "optim.lr=0.1"), out, log=lambda *_: None, resume=True)


def test_killed_between_best_and_last_of_epoch_1_starts_afresh(tiny_config, tmp_path, monkeypatch):
    """Epoch 1 saves best.pt, then dies while staging last.pt: `--resume auto` redoes the run from the
    start (the same weights as a whole run) instead of calling the folder someone else's."""
    import ddnn.engine.run_folder as run_folder_module

    whole = train(tiny_config("train.epochs=2"), tmp_path / "whole", log=lambda *_: None)
    out = tmp_path / "run"
    real_save = run_folder_module.save_checkpoint

    def die_at_last(ckpt, path):
        if path.name == "last.pt":
            (path.parent / ".last.pt.staged").write_bytes(b"half a checkpoint")
            raise KeyboardInterrupt
        real_save(ckpt, path)

    monkeypatch.setattr(run_folder_module, "save_checkpoint", die_at_last)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config("train.epochs=2"), out, log=lambda *_: None)
    monkeypatch.setattr(run_folder_module, "save_checkpoint", real_save)
    assert sorted(p.name for p in out.iterdir()) == [".last.pt.staged", "best.pt", "config.yaml", "metrics.jsonl"]

    resumed = train(tiny_config("train.epochs=2"), out, log=lambda *_: None, resume=True)
    assert resumed["nets"] == whole["nets"]
    a, b = load_checkpoint(tmp_path / "whole" / "last.pt"), load_checkpoint(out / "last.pt")
    assert all(torch.equal(v, b["state"][k]) for k, v in a["state"].items())
    assert not (out / ".last.pt.staged").exists()


def test_resume_errors(tmp_path, tiny_config):
    with pytest.raises(DdnnError, match="holds no last.pt to resume"):
        train(None, tmp_path, log=lambda *_: None, resume=True)
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(DdnnError, match="not empty"):  # a folder that is not a run is never taken over
        train(tiny_config(), tmp_path, log=lambda *_: None, resume=True)
    assert (tmp_path / "keep.txt").read_text() == "x"


def test_a_checkpoint_of_another_model_is_refused(tiny_config, tmp_path):
    out = tmp_path / "run"
    train(tiny_config("train.epochs=1"), out, log=lambda *_: None)
    ckpt = load_checkpoint(out / "last.pt")
    ckpt["config"]["model"]["widths"] = [8, 8, 8]  # the stored weights no longer fit the config
    ckpt["epoch"] = 0
    save_checkpoint(ckpt, out / "last.pt")
    (out / "results.json").unlink()
    with pytest.raises(DdnnError, match="does not fit the model its config builds"):
        train(None, out, log=lambda *_: None, resume=True)


def test_seeds_run_resumes_per_seed(tiny_config, tmp_path, monkeypatch):
    """A seeds run stopped inside its second seed: `resume` keeps seed 0, continues seed 1, writes the report;
    without a config it reads the seeds run's own (seeds-config.yaml)."""
    from ddnn.engine.trainer import Trainer

    cfg = tiny_config("train.epochs=2", "seeds=[0,1]")
    out = tmp_path / "seeds"
    real_epoch = Trainer.train_epoch

    def stop_seed_1(self, epoch):
        if self.cfg.train.seed == 1 and epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", stop_seed_1)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, log=lambda *_: None)
    monkeypatch.setattr(Trainer, "train_epoch", real_epoch)
    seed0 = (out / "seed0" / "results.json").read_text()
    assert not (out / "seed1" / "results.json").exists() and not (out / "report.json").exists()
    with pytest.raises(DdnnError, match="not empty"):  # without resume, the folder is not reused
        train(cfg, out, log=lambda *_: None)
    said = []
    train(None, out, log=said.append, resume=True)
    assert any("seed0 already finished" in line for line in said)
    assert any("resuming" in line and "seed1" in line for line in said)
    assert (out / "seed0" / "results.json").read_text() == seed0
    alone = train(tiny_config("train.epochs=2", "train.seed=1"), tmp_path / "alone", log=lambda *_: None)
    assert json.loads((out / "seed1" / "results.json").read_text())["nets"] == alone["nets"]
    assert (out / "report.json").exists()


def test_resume_compares_what_is_trained_and_takes_where_it_runs_from_the_command_line(tiny_config, tmp_path):
    """One list of keys that do not change what is trained (config.INCIDENTAL_KEYS): they may differ on
    resume and are taken from the given config; any other key must agree."""
    from ddnn.config import INCIDENTAL_KEYS, to_dict
    from ddnn.engine.resume import checkpoint_config

    saved = tiny_config()
    ckpt = {"config": to_dict(saved)}
    moved = tiny_config("runtime.threads=3", "data.root=/data/moved", "name=renamed")
    cfg = checkpoint_config(ckpt, moved, tmp_path)
    assert cfg.runtime.threads == 3 and cfg.data.root == "/data/moved" and cfg.name == "tiny"
    assert cfg.optim == saved.optim and cfg.model == saved.model
    assert {"runtime.", "data.root", "name"} <= set(INCIDENTAL_KEYS)
    for override, key in (("train.seed=5", "train.seed"), ("data.val_fraction=0.3", "data.val_fraction"),
                          ("distributed.reference_batch=64", "distributed.reference_batch")):
        with pytest.raises(DdnnError, match=rf"its config has {key}="):
            checkpoint_config(ckpt, tiny_config(override), tmp_path)
