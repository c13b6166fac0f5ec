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
