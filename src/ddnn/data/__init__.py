"""Datasets, registered by name (`data.name`)."""

from ddnn.data import cifar, folder, mnist5k, smallfolder, synthetic  # noqa: F401  (registration)
from ddnn.data.base import Dataset, Split
from ddnn.data.loader import Normalizer, batches, num_batches
from ddnn.data.spec import InputSpec
from ddnn.registry import DATASETS

__all__ = ["Dataset", "InputSpec", "Normalizer", "Split", "batches", "load_dataset", "num_batches"]


def load_dataset(cfg) -> Dataset:
    """The dataset named by `cfg.name` (a DataConfig), split and normalised per the config."""
    return DATASETS.get(cfg.name)(cfg)
