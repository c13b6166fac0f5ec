"""Nothing lost, nothing silent (issue 18): each failure found by trying to break ddnn, reproduced.

One small finished run is made per module and copied where a case changes it, so every case runs in
seconds. Cases that need the real CLI's stderr (one `ddnn: error:` line) are in test_cli_errors.py.
"""

import shutil
from pathlib import Path

import pytest

from ddnn.cli import main
from ddnn.config import load_config
from ddnn.errors import DdnnError
from ddnn.experiments import train

TINY = ["name=tiny", "data.name=synthetic", "data.synthetic.size=160", "data.synthetic.image_size=16",
        "data.synthetic.channels=3", "data.synthetic.classes=4", "data.batch_size=32", "data.eval_batch_size=64",
        "data.val_fraction=0.2", "data.test_fraction=0.2", "model.name=resnet14", "model.subnets=[resnet8]",
        "model.widths=[4,8,8]", "train.epochs=1", "optim.lr=0.05", "schedule.warmup_epochs=0",
        "runtime.progress=false", "runtime.threads=1"]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A finished one-epoch run (never changed: copy it with `run_copy`)."""
    out = tmp_path_factory.mktemp("made") / "run"
    train(load_config(None, TINY), out, log=lambda *_: None)
    return out


@pytest.fixture
def run_copy(made, tmp_path):
    def copy(name: str = "run") -> Path:
        return Path(shutil.copytree(made, tmp_path / name))
    return copy


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- 1. `--resume DIR runtime.threads=2`: the overrides go on the run's own config ----------------

def test_resume_with_runtime_override_uses_the_runs_own_config(run_copy, capsys):
    run = run_copy()
    before = files_of(run)
    assert main(["train", "--resume", str(run), "runtime.threads=1"]) == 0
    assert "already finished" in capsys.readouterr().out
    assert files_of(run) == before


def test_resume_with_a_training_override_is_refused(run_copy):
    run = run_copy()
    before = files_of(run)
    with pytest.raises(DdnnError, match=r"cannot resume .*its config has optim\.lr=0\.05 but 0\.5 was given"):
        main(["--debug", "train", "--resume", str(run), "optim.lr=0.5"])
    assert main(["train", "--resume", str(run), *TINY]) == 0  # the whole first command again agrees
    assert files_of(run) == before


# -- 2. a checkpoint must belong to its run folder ------------------------------------------------

def plant(run: Path, name: str = "best.pt", **config_changes) -> None:
    """Replace the run's checkpoint by one of 'another run' (other run id / config values)."""
    from ddnn.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(run / name)
    for key, value in config_changes.items():
        section, _, field = key.rpartition(".")
        (ckpt["config"][section] if section else ckpt["config"])[field] = value
    save_checkpoint(ckpt, run / name)


def test_every_run_has_an_id_in_config_results_and_checkpoints(made):
    import json

    import yaml

    from ddnn.checkpoint import load_checkpoint

    run_id = yaml.safe_load((made / "config.yaml").read_text())["run_id"]
    assert isinstance(run_id, str) and len(run_id) >= 16
    assert json.loads((made / "results.json").read_text())["run_id"] == run_id
    assert load_checkpoint(made / "best.pt")["config"]["run_id"] == run_id
    assert load_checkpoint(made / "last.pt")["config"]["run_id"] == run_id


DEPLOY_COMMANDS = {
    "eval": ["eval", "--run", "{run}"],
    "profile": ["profile", "--run", "{run}", "--repeats", "1", "--warmup", "0", "--batch-sizes", "1"],
    "export": ["export", "--run", "{run}", "--subnet", "resnet8"],
    "calibrate": ["calibrate", "--run", "{run}", "--batches", "1"],
}


@pytest.mark.parametrize("command", list(DEPLOY_COMMANDS))
def test_a_checkpoint_of_another_run_is_refused_and_nothing_is_written(run_copy, command):
    run = run_copy()
    plant(run, run_id="0123456789abcdef")
    before = files_of(run)
    argv = [a.format(run=run) for a in DEPLOY_COMMANDS[command]]
    with pytest.raises(DdnnError, match=r"does not belong to run folder .*run id is 0123456789abcdef"):
        main(["--debug", *argv])
    assert files_of(run) == before


def test_resume_refuses_a_last_pt_of_another_run(run_copy):
    run = run_copy()
    plant(run, "last.pt", run_id="0123456789abcdef")
    (run / "results.json").unlink()
    before = files_of(run)
    with pytest.raises(DdnnError, match="does not belong to run folder"):
        train(None, run, log=lambda *_: None, resume=True)
    assert files_of(run) == before


def test_old_run_folders_without_ids_still_load_and_are_checked_by_config(run_copy, capsys):
    import yaml

    run = run_copy()
    config = yaml.safe_load((run / "config.yaml").read_text())
    del config["run_id"]
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    plant(run, run_id=None)  # as written before run ids (the key is absent there: None is its default)
    assert main(["eval", "--run", str(run)]) == 0
    assert "resnet8" in capsys.readouterr().out
    plant(run, **{"optim.lr": 0.5})  # another run's checkpoint, from before run ids
    with pytest.raises(DdnnError, match=r"its optim\.lr is not the one in config\.yaml"):
        main(["--debug", "eval", "--run", str(run)])


# -- 3. export's --out: a folder, a file, a path that cannot be written -----------------------------

def export(run: Path, *args: str) -> int:
    return main(["--debug", "export", "--run", str(run), "--verify-images", "8", *args])


def test_export_into_an_existing_folder_writes_the_file_there(run_copy, tmp_path):
    run = run_copy()
    (tmp_path / "dest").mkdir()
    assert export(run, "--subnet", "resnet8", "--out", str(tmp_path / "dest")) == 0
    assert (tmp_path / "dest" / "resnet8.torchscript.pt").is_file()
    assert (tmp_path / "dest" / "resnet8.torchscript.pt.json").is_file()


def test_export_of_several_files_onto_an_existing_file_is_refused(run_copy, tmp_path):
    run = run_copy()
    (tmp_path / "taken").write_text("keep me")
    with pytest.raises(DdnnError, match="is a file, but this export writes several files"):
        export(run, "--all", "--out", str(tmp_path / "taken"))
    assert (tmp_path / "taken").read_text() == "keep me"


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_to_a_path_that_cannot_be_written_is_one_line(run_copy, fmt):
    run = run_copy()
    with pytest.raises(DdnnError, match=r"cannot write /proc/r8\.pt"):
        export(run, "--subnet", "resnet8", "--format", fmt, "--out", "/proc/r8.pt")


# -- 4. a full disk: "no space left on PATH", what was saved is kept, no temp file left ------------

@pytest.fixture
def disk(monkeypatch):
    """A disk that fills up when told: every write through ddnn.files then fails half-way with ENOSPC."""
    import errno
    import os

    import ddnn.files

    state = {"full": False}
    real = ddnn.files._write_all

    def write_all(fd, data):
        if state["full"]:
            os.write(fd, bytes(memoryview(data).cast("B")[:64]))
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(ddnn.files, "_write_all", write_all)
    return state


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if p.name.endswith((".tmp", ".staged")))


def test_training_on_a_full_disk_keeps_the_last_epoch_and_resumes(tmp_path, disk, monkeypatch, capsys):
    import ddnn.engine.run_folder as run_folder
    from ddnn.checkpoint import load_checkpoint

    real_save = run_folder.save_checkpoint

    def save(ckpt, path):
        disk["full"] = ckpt["epoch"] == 2  # the disk fills up during epoch 2's save
        real_save(ckpt, path)

    monkeypatch.setattr(run_folder, "save_checkpoint", save)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY, "train.epochs=2"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("ddnn: error: no space left on ") and str(out) in err[0]
    assert f"ddnn train --resume {out}" in err[0]
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert leftovers(out) == []
    disk["full"] = False
    monkeypatch.setattr(run_folder, "save_checkpoint", real_save)
    assert main(["train", "--resume", str(out)]) == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 2 and (out / "results.json").is_file()


@pytest.mark.parametrize("args", [["--subnet", "resnet8", "--format", "torchscript"],
                                  ["--subnet", "resnet8", "--format", "onnx"],
                                  ["--switchable", "--format", "torchscript"], ["--switchable", "--format", "onnx"]])
def test_export_on_a_full_disk_keeps_the_previous_file_and_leaves_no_temp(run_copy, disk, args):
    run = run_copy()
    assert export(run, *args) == 0
    before = files_of(run / "export")
    disk["full"] = True
    with pytest.raises(DdnnError, match=r"no space left on .*export"):
        export(run, *args)
    assert files_of(run / "export") == before
    assert leftovers(run) == []


def test_calibrate_and_profile_on_a_full_disk_keep_what_was_there(run_copy, disk):
    from ddnn.checkpoint import load_checkpoint

    run = run_copy()
    before = files_of(run)
    disk["full"] = True
    with pytest.raises(DdnnError, match="no space left on"):
        main(["--debug", "calibrate", "--run", str(run), "--batches", "1"])
    with pytest.raises(DdnnError, match="no space left on"):
        main(["--debug", "profile", "--run", str(run), "--repeats", "1", "--warmup", "0", "--batch-sizes", "1"])
    assert files_of(run) == before and leftovers(run) == []
    assert "calibration" not in load_checkpoint(run / "best.pt")


# -- 5. a failed start does not block the retry; non-finite numbers are refused at config load ------

def test_a_run_that_failed_before_its_first_epoch_restarts_with_the_same_command(tmp_path, monkeypatch, capsys):
    from ddnn.engine.trainer import Trainer

    real_epoch = Trainer.train_epoch

    def broken_image(self, epoch):
        raise DdnnError("image 17 of the training split cannot be decoded")

    monkeypatch.setattr(Trainer, "train_epoch", broken_image)
    out = tmp_path / "run"
    command = ["train", "--out", str(out), *TINY]
    assert main(command) == 2
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.jsonl"]
    with pytest.raises(DdnnError, match=f"start the run with: ddnn train --out {out}"):  # what --resume says
        main(["--debug", "train", "--resume", str(out)])
    monkeypatch.setattr(Trainer, "train_epoch", real_epoch)
    capsys.readouterr()
    assert main(command) == 0  # the command --resume named, and the one that failed
    assert "never finished an epoch; starting afresh" in capsys.readouterr().out
    assert (out / "results.json").is_file()
    with pytest.raises(DdnnError, match="not empty"):  # a run with a finished epoch is never started over
        main(["--debug", *command])


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "nan", "inf", "1e999"])
def test_non_finite_numbers_are_refused_at_config_load(value):
    with pytest.raises(DdnnError, match="optim.lr"):
        load_config(None, [f"optim.lr={value}"])
    with pytest.raises(DdnnError, match="method.temperature"):
        load_config(None, [f"method.temperature={value}"])


# -- 6. derived files name the checkpoint they came from, and a changed checkpoint is noticed ------

PROFILE = ["profile", "--repeats", "2", "--warmup", "0", "--batch-sizes", "1"]


def test_select_refuses_a_profile_made_before_calibrate_and_calibrate_names_stale_files(run_copy, capsys):
    import json

    from ddnn.checkpoint import sha256_of

    run = run_copy()
    assert main([*PROFILE, "--run", str(run)]) == 0
    assert export(run, "--subnet", "resnet8") == 0
    made_from = sha256_of(run / "best.pt")
    profile = json.loads((run / "profile.json").read_text())
    exported = json.loads((run / "export" / "resnet8.torchscript.pt.json").read_text())
    assert profile["checkpoint_sha256"] == exported["source"]["checkpoint_sha256"] == made_from
    assert profile["run_id"] == exported["source"]["run_id"] is not None
    assert main(["select", "--run", str(run), "--max-macs", "1e9"]) == 0
    capsys.readouterr()

    assert main(["calibrate", "--run", str(run), "--batches", "1"]) == 0
    err = capsys.readouterr().err
    assert "now out of date" in err and "profile.json" in err and "export/resnet8.torchscript.pt" in err
    with pytest.raises(DdnnError, match=r"profile\.json was made from .*best\.pt as it was before it changed"):
        main(["--debug", "select", "--run", str(run), "--max-macs", "1e9"])
    assert main([*PROFILE, "--run", str(run)]) == 0  # profiled again: current
    assert main(["select", "--run", str(run), "--max-macs", "1e9"]) == 0


# -- 7. loaded machines: --threads everywhere, profile says when the machine was busy -------------

@pytest.mark.parametrize("command", ["eval", "export", "calibrate", "profile"])
def test_every_command_that_computes_takes_threads(run_copy, command, monkeypatch):
    import torch

    run = run_copy()
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    argv = [a.format(run=run) for a in DEPLOY_COMMANDS[command]]
    assert main([*argv, "--threads", "1"]) == 0
    assert seen and seen[-1] == 1
    with pytest.raises(DdnnError, match="--threads -1 must be an integer >= 0"):
        main(["--debug", *argv, "--threads", "-1"])


def profile_of(p10: float, p90: float, load: float | None = 0.1) -> dict:
    lat = {"median": (p10 + p90) / 2, "p10": p10, "p90": p90}
    return {"cpus": 2, "load_average": load,
            "nets": {"resnet8": {"latency_ms": {"1": {"standalone": lat, "ddnn": lat}}}}}


def test_profile_says_when_its_latencies_show_a_busy_machine():
    from ddnn.deploy.profile import busy_note

    assert busy_note(profile_of(1.0, 1.3)) is None  # a quiet machine's spread
    note = busy_note(profile_of(1.0, 100.0))  # batch-1 latencies 100x apart
    assert "busy" in note and "100.0x" in note and "resnet8 at batch 1" in note and "--threads" in note
    assert "load average 5 on 2 cores" in busy_note(profile_of(1.0, 1.3, load=5.0))


# -- 8. validation holes and misleading messages --------------------------------------------------

@pytest.fixture(scope="module")
def profiled(made, tmp_path_factory) -> Path:
    run = Path(shutil.copytree(made, tmp_path_factory.mktemp("profiled") / "run"))
    assert main([*PROFILE, "--run", str(run)]) == 0
    return run


@pytest.mark.parametrize("budget", [["--max-latency-ms", "nan"], ["--max-macs", "1e400"], ["--max-params", "-1"],
                                    ["--max-macs", "1e9", "--batch", "0"]])
def test_select_refuses_budgets_that_are_no_budget(profiled, budget):
    with pytest.raises(DdnnError, match="must be"):
        main(["--debug", "select", "--run", str(profiled), *budget])


@pytest.mark.parametrize("text, value", [("200K", 2e5), ("1.5M", 1.5e6), ("3G", 3e9), ("2e5", 2e5), ("200000", 2e5),
                                         ("30m", 3e7)])
def test_budgets_are_written_as_people_write_counts(text, value):
    from ddnn.deploy.select import count

    assert count(text) == value


def test_select_json_prints_only_json_on_stdout(profiled, capsys):
    import json

    assert main(["select", "--run", str(profiled), "--max-params", "1G", "--json"]) == 0
    out, err = capsys.readouterr()
    choice = json.loads(out)
    assert choice["net"] in ("resnet14", "resnet8") and f"selected {choice['net']}" in err


def test_an_empty_config_file_is_refused(tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    with pytest.raises(DdnnError, match="empty.yaml is empty"):
        load_config(str(tmp_path / "empty.yaml"))


def test_files_that_are_not_checkpoints_are_named_for_what_they_are(made, tmp_path, capsys):
    import warnings

    from ddnn.checkpoint import load_checkpoint

    (tmp_path / "export").mkdir()
    assert export(made, "--subnet", "resnet8", "--out", str(tmp_path / "export")) == 0
    with pytest.raises(DdnnError, match="is a TorchScript model .*torch.jit.load.*best.pt"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no torch warning on the way
            load_checkpoint(tmp_path / "export" / "resnet8.torchscript.pt")
    with pytest.raises(DdnnError, match="is a folder, not a file"):
        load_checkpoint(made)


def test_a_malicious_pickle_is_refused_in_one_clear_sentence(tmp_path):
    import os

    import torch

    from ddnn.checkpoint import load_checkpoint

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"format": "ddnn-checkpoint/2", "state": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(DdnnError) as err:
        load_checkpoint(tmp_path / "evil.pt")
    message = str(err.value)
    assert "refused: loading it would call posix.system" in message or "refused: loading it would call nt.system" in message
    assert "PyTorch 2.6" not in message and message.endswith("use a checkpoint written by ddnn train")


# -- 9. leftovers: killed writers' temp files, runs that share a seed, the curves plot -------------

def dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_files_of_killed_saves_are_removed_by_later_commands(run_copy):
    import os

    run = run_copy()
    dead = [run / f".best.pt.{dead_pid()}-abc123.staged", run / f".last.pt.{dead_pid()}-def456.tmp",
            run / "..last.pt.staged.x1y2z3.tmp"]  # the last: a temp name of ddnn before issue 18
    live = run / f".best.pt.{os.getpid()}-0a0b0c.tmp"  # a writer that is still at work
    for path in [*dead, live]:
        path.write_bytes(b"half a checkpoint")
    assert main(["eval", "--run", str(run)]) == 0
    assert [p for p in dead if p.exists()] == [] and live.exists()
    live.unlink()
    killed_during_resume = run / f".last.pt.{dead_pid()}-aaaaaa.staged"
    killed_during_resume.write_bytes(b"x")
    assert main(["train", "--resume", str(run)]) == 0  # already finished: still cleaned
    assert not killed_during_resume.exists()


def test_report_warns_when_runs_share_a_seed(run_copy, tmp_path):
    said = []
    from ddnn.experiments.report import build_report

    a, b = run_copy("a"), run_copy("b")
    build_report([a, b], tmp_path / "report", log=said.append)
    warning = [line for line in said if line.startswith("ddnn: warning:")]
    assert len(warning) == 1 and "share a seed (seed 0" in warning[0] and "not independent" in warning[0]
    assert "**warning**" in (tmp_path / "report" / "report.md").read_text()


def test_curves_legend_is_outside_the_data_and_the_y_axis_fits_the_curves(run_copy):
    import json

    from ddnn.experiments.report import curves_figure
    from ddnn.experiments.runs import aggregate, group_runs, read_run

    run = run_copy()
    records = [{"epoch": e, "val_top1": {"resnet14": 97.8 + 0.2 * e, "resnet8": 97.2 + 0.2 * e},
                "losses": {"ce": 1.0 / e}} for e in range(1, 5)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    groups = group_runs([read_run(run)])
    fig = curves_figure(groups, [aggregate(g) for g in groups])
    fig.canvas.draw()
    top = fig.axes[0]
    low, high = top.get_ylim()
    assert 95 < low < 97.4 and 98.6 < high <= 100.5  # fitted to 97.4-98.6, not 0-100
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    legend = fig.legends[0].get_window_extent()
    assert not any(legend.overlaps(ax.get_window_extent()) for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["resnet14", "resnet8"]


# -- the same classes of fault elsewhere ---------------------------------------------------------

def test_a_seeds_run_that_failed_before_any_epoch_restarts_with_the_same_command(tmp_path, monkeypatch):
    from ddnn.engine.trainer import Trainer

    real_epoch = Trainer.train_epoch
    monkeypatch.setattr(Trainer, "train_epoch", lambda self, epoch: (_ for _ in ()).throw(DdnnError("bad image")))
    out = tmp_path / "seeds"
    command = ["train", "--out", str(out), "--seeds", "0,1", *TINY]
    assert main(command) == 2
    assert sorted(p.name for p in out.iterdir()) == ["seed0", "seeds-config.yaml"]
    monkeypatch.setattr(Trainer, "train_epoch", real_epoch)
    assert main(command) == 0
    assert (out / "seed1" / "results.json").is_file() and (out / "report.json").is_file()


def test_a_kd_teacher_folder_with_another_runs_checkpoint_is_refused(run_copy):
    from ddnn.engine.teachers import load_teacher

    run = run_copy()
    plant(run, run_id="0123456789abcdef")
    cfg = load_config(None, [*TINY, "method.name=kd", f"method.kd.teachers=[{run}]"])
    with pytest.raises(DdnnError, match=r"teacher .*does not belong to run folder"):
        load_teacher(str(run), cfg.method.kd, _spec_of(run))


def _spec_of(run: Path):
    from ddnn.checkpoint import load_checkpoint
    from ddnn.data import InputSpec

    return InputSpec.from_dict(load_checkpoint(run / "best.pt")["input"])


def test_an_unforeseen_io_error_is_still_one_line(monkeypatch, capsys):
    import errno

    import ddnn.cli

    def broken(args):
        raise OSError(errno.EIO, "Input/output error", "/data/disk0/x.bin")

    monkeypatch.setattr(ddnn.cli, "_cmd_list", broken)
    assert main(["list"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["ddnn: error: Input/output error: /data/disk0/x.bin (--debug shows where it happened)"]


def test_select_refuses_a_profile_whose_checkpoint_was_replaced_by_another_runs(run_copy):
    run = run_copy()
    assert main([*PROFILE, "--run", str(run)]) == 0
    plant(run, run_id="0123456789abcdef")  # best.pt now another run's: the profile is not of it
    with pytest.raises(DdnnError, match=r"profile\.json was made from .*best\.pt as it was before it changed"):
        main(["--debug", "select", "--run", str(run), "--max-macs", "1G"])
