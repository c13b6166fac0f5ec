"""From a config to the objects a run needs: dataset, method, and the input description."""

from dataclasses import dataclass
from pathlib import Path

from ddnn.config import Config
from ddnn.data import Dataset, load_dataset
from ddnn.errors import DdnnError
from ddnn.methods import Method
from ddnn.models import ModelBuilder
from ddnn.registry import METHODS


@dataclass
class InputSpec:
    """What a checkpoint must remember about its data to rebuild and deploy its nets."""

    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, data: Dataset) -> "InputSpec":
        return cls(data.num_classes, (data.channels, *data.image_size), tuple(data.mean), tuple(data.std))

    def to_dict(self) -> dict:
        return {"num_classes": self.num_classes, "shape": list(self.shape), "mean": list(self.mean), "std": list(self.std)}

    def check(self, data: Dataset) -> Dataset:
        """`data` if it still has this spec's shape and classes (the files may have changed since)."""
        if (data.channels, *data.image_size) != tuple(self.shape) or data.num_classes != self.num_classes:
            raise DdnnError(f"data {data.name} no longer matches the checkpoint's input "
                            f"{list(self.shape)} / {self.num_classes} classes")
        return data

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        return cls(int(d["num_classes"]), tuple(d["shape"]), tuple(d["mean"]), tuple(d["std"]))


def build_method(cfg: Config, spec: InputSpec) -> Method:
    """The configured method around the configured model, for data described by `spec`."""
    m = cfg.model
    builder = ModelBuilder(
        m.name, m.subnets, m.blocks, num_classes=spec.num_classes, in_channels=spec.shape[0], widths=m.widths,
        bn=m.bn, shortcut=m.shortcut, stem=m.stem, zero_init_residual=m.zero_init_residual,
        cheap=m.cheap, cheap_groups=m.cheap_groups, head=m.head, cheap_layout=m.cheap_layout,
    )
    return METHODS.get(cfg.method.name)(cfg.method, builder)


def load_data(cfg: Config) -> tuple[Dataset, InputSpec]:
    data = load_dataset(cfg.data)
    return data, InputSpec.of(data)


def check_config(cfg: Config) -> None:
    """Fail fast on names the registries don't know, before any data is loaded."""
    from ddnn.models import family_of, resolve_subnets
    from ddnn.registry import DATASETS

    DATASETS.get(cfg.data.name)
    METHODS.get(cfg.method.name)
    family, preset = family_of(cfg.model.name)
    full = tuple(cfg.model.blocks) if cfg.model.blocks else preset
    if full is not None:
        resolve_subnets(family, full, cfg.model.subnets)
    if cfg.model.init_from and cfg.model.cheap:
        raise DdnnError("model.init_from loads standard-convolution weights and cannot start a model.cheap net; "
                        "unset one of them")
    if cfg.model.init_from and not Path(cfg.model.init_from).expanduser().is_file():
        raise DdnnError(f"model.init_from file {cfg.model.init_from} does not exist; "
                        "give the path of a torchvision ResNet state_dict (.pth)")
