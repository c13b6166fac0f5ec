"""CIFAR-10/100 read from the official "python version" archives as extracted on disk.

Layout: ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch} and
ROOT/cifar-100-python/{train, test}. The batches are pickles; they are read with an unpickler that
only admits the numpy types an array needs, so a tampered file cannot run code.
"""

import pickle
from pathlib import Path

import numpy as np
import torch

from ddnn.data.base import Dataset, Split, carve
from ddnn.errors import DdnnError
from ddnn.registry import DATASETS

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def read_batch(path: Path) -> dict:
    """One CIFAR pickle as a dict with str keys."""
    try:
        with open(path, "rb") as fh:
            raw = _ArrayUnpickler(fh, encoding="bytes").load()
    except FileNotFoundError:
        raise
    except Exception as err:  # a corrupt pickle can fail in many ways; none of them may run code
        raise DdnnError(f"{path} is not a readable CIFAR batch ({type(err).__name__}: {err}); "
                        "re-extract the archive") from None
    if not isinstance(raw, dict):
        raise DdnnError(f"{path} is not a CIFAR batch (expected a dict); re-extract the archive")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def _to_split(batches: list[tuple[Path, dict]], label_key: str) -> Split:
    """Concatenate checked batches: each must hold (N, 3072) uint8 rows and N labels."""
    datas, labels = [], []
    for path, batch in batches:
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            label = np.asarray(batch[label_key], dtype=np.int64)
        except KeyError as err:
            raise DdnnError(f"{path}: the CIFAR batch lacks the key {err}; re-extract the archive") from None
        except (TypeError, ValueError, OverflowError) as err:
            raise DdnnError(f"{path}: the CIFAR batch holds unusable values ({err}); re-extract the archive") from None
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or label.shape != (len(data),):
            raise DdnnError(f"{path}: CIFAR data has shape {data.shape} with {label.size} labels, expected "
                            "(N, 3072) and N labels; re-extract the archive")
        datas.append(data)
        labels.append(label)
    data = np.concatenate(datas)
    return Split(torch.from_numpy(data).reshape(-1, 3, 32, 32), torch.from_numpy(np.concatenate(labels)))


def _folder(root: str | None, sub: str, first_file: str, name: str) -> Path:
    if root is None:
        raise DdnnError(f"dataset {name} needs data.root: the folder that holds {sub}/ (extract the python version there)")
    base = Path(root).expanduser()
    for folder in (base / sub, base):
        if (folder / first_file).is_file():
            return folder
    raise DdnnError(
        f"{name} not found under {base}: expected {base / sub / first_file}; "
        f"download the CIFAR python version and extract it into {base}"
    )


def load_cifar_raw(root: str | None, classes: int) -> tuple[Split, Split]:
    """(train, test) splits of CIFAR-10 (classes=10) or CIFAR-100 (classes=100)."""
    if classes == 10:
        folder = _folder(root, "cifar-10-batches-py", "data_batch_1", "cifar10")
        train_files, test_files, key = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"
    else:
        folder = _folder(root, "cifar-100-python", "train", "cifar100")
        train_files, test_files, key = ["train"], ["test"], "fine_labels"

    def read(files: list[str]) -> Split:
        try:
            return _to_split([(folder / f, read_batch(folder / f)) for f in files], key)
        except FileNotFoundError as err:
            raise DdnnError(f"CIFAR file missing: {err.filename}; re-extract the archive into {folder.parent}") from None

    return read(train_files), read(test_files)


def _register(name: str, classes: int) -> None:
    @DATASETS.register(name, help=f"CIFAR-{classes} from its python-version files under data.root, 3x32x32")
    def load(cfg) -> Dataset:
        train, test = load_cifar_raw(cfg.root, classes)
        return carve(name, train, test, classes, cfg.val_fraction, cfg.test_fraction, cfg.split_seed, cfg.train_limit)


_register("cifar10", 10)
_register("cifar100", 100)
