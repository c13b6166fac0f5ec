"""A trained run as the deploy commands see it: its method, checkpoint, config and input description."""

from dataclasses import dataclass
from pathlib import Path

from ddnn import run_files
from ddnn.config import Config, saved_config
from ddnn.data import Dataset, InputSpec, load_dataset
from ddnn.engine.evaluation import load_method
from ddnn.engine.run_folder import check_belongs, checkpoint_of
from ddnn.errors import DdnnError, did_you_mean
from ddnn.files import remove_leftovers
from ddnn.methods import Method


@dataclass
class TrainedRun:
    folder: Path
    checkpoint: Path
    method: Method  # on CPU, eval mode, calibrated BN statistics installed
    ckpt: dict
    cfg: Config
    spec: InputSpec

    def check_net(self, name: str) -> str:
        """`name` if the run has such a net, else a one-line error listing the nets it has."""
        nets = self.method.nets()
        if name not in nets:
            raise DdnnError(f"run {self.folder} has no net '{name}'{did_you_mean(name, nets)}; "
                            f"its nets: {', '.join(nets)}")
        return name

    def load_data(self) -> Dataset:
        return self.spec.check(load_dataset(self.cfg.data))


def open_run(folder: Path, which: str = "best", calibrated: bool = True) -> TrainedRun:
    """The run in `folder` with its `which` checkpoint (best or last) loaded."""
    path = checkpoint_of(folder, which)
    method, ckpt = load_method(path, calibrated=calibrated)
    check_belongs(Path(folder), ckpt, path)
    for where in (Path(folder), Path(folder) / run_files.EXPORT):  # temp files of killed saves and exports
        remove_leftovers(where)
    return TrainedRun(Path(folder), path, method, ckpt, saved_config(ckpt["config"]), InputSpec.from_dict(ckpt["input"]))
