"""What a checkpoint remembers about its data, to rebuild and deploy its nets without the data."""

from dataclasses import dataclass

from ddnn.data.base import Dataset
from ddnn.errors import DdnnError


@dataclass
class InputSpec:
    """Classes, input shape (C, H, W) and the normalisation the nets were trained with."""

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
