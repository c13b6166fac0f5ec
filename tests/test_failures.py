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
    with pytest.raises(DdnnError, match=r"only runtime\.\* and data\.root may be given, not optim\.lr"):
        main(["--debug", "train", "--resume", str(run), "optim.lr=0.5"])
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
