"""A trained run as the deploy commands see it: its method, config, input description and results."""

import json
from dataclasses import dataclass
from pathlib import Path

from ddnn.config import Config, saved_config
from ddnn.data import Dataset, load_dataset
from ddnn.engine.evaluation_cli import load_method
from ddnn.engine.setup import InputSpec
from ddnn.errors import DdnnError, did_you_mean
from ddnn.methods import Method


@dataclass
class TrainedRun:
    folder: Path
    checkpoint: Path
    method: Method  # on CPU, eval mode, calibrated BN statistics installed
    ckpt: dict
    cfg: Config
    spec: InputSpec

    @property
    def results(self) -> dict | None:
        """results.json of the run (None for a run that has not finished)."""
        path = self.folder / "results.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DdnnError(f"{path} is not valid JSON ({err.msg}); re-create it with `ddnn eval --run`") from None

    def check_net(self, name: str) -> str:
        """`name` if the run has such a net, else a one-line error listing the nets it has."""
        nets = self.method.nets()
        if name not in nets:
            raise DdnnError(f"run {self.folder} has no net '{name}'{did_you_mean(name, nets)}; "
                            f"its nets: {', '.join(nets)}")
        return name

    def load_data(self) -> Dataset:
        return self.spec.check(load_dataset(self.cfg.data))


def checkpoint_of(folder: Path, which: str = "best") -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise DdnnError(f"run folder {folder} does not exist; give a folder written by `ddnn train`")
    path = folder / f"{which}.pt"
    if not path.is_file():
        raise DdnnError(f"run folder {folder} has no {which}.pt; is it a ddnn run folder (train one with `ddnn train`)?")
    return path


def open_run(folder: Path, which: str = "best", calibrated: bool = True) -> TrainedRun:
    """The run in `folder` with its `which` checkpoint (best or last) loaded."""
    path = checkpoint_of(folder, which)
    method, ckpt = load_method(path, calibrated=calibrated)
    return TrainedRun(Path(folder), path, method, ckpt, saved_config(ckpt["config"]), InputSpec.from_dict(ckpt["input"]))
