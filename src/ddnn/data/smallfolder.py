"""Small-image class folders (CIFAR-10 as JPEG files, and the like), decoded once into memory.

The images of every split (data/sources.py: folders or .tar/.tar.gz archives, read in place) are
decoded with Pillow on `data.workers` threads into one uint8 (N, C, H, W) tensor, so training runs
the CIFAR recipe at native resolution with the in-memory batch augmentation (pad-crop + flip) and
the training images' own per-channel mean/std. Every image must have the same size.

The decoded tensors are cached (`data.cache`, under $DDNN_CACHE or ~/.cache/ddnn) under a key made
from the sources' content (an archive's sha256; a folder's file names, sizes and mtimes), so a
changed archive or folder is decoded afresh, never served stale. The cache is a numpy .npz read
without pickle.
"""

import hashlib
import io
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ddnn.data.base import Dataset, Split, carve
from ddnn.data.sources import Member, SplitFiles, cache_folder, fingerprint, read_splits
from ddnn.errors import DdnnError
from ddnn.registry import DATASETS

CACHE_VERSION = "smallfolder/1"


def _decode(member: Member, where: str) -> np.ndarray:
    """(H, W) for grey images, else (H, W, 3) uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(member.data)) as img:
            img = img.convert("L") if img.mode in ("1", "L", "I;16", "I") else img.convert("RGB")
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DdnnError(f"cannot read image {member.name} in {where} ({err}); remove or replace the file") from None


def decode_images(members: list[Member], where: str, workers: int) -> torch.Tensor:
    """The members' images as one uint8 (N, C, H, W) tensor; every image must have the same size."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        arrays = list(tqdm(pool.map(lambda m: _decode(m, where), members, chunksize=256), total=len(members),
                           desc=f"decoding {where}", unit="img", disable=None, leave=False))
    first = arrays[0].shape[:2] if arrays else None
    for member, array in zip(members, arrays):
        if array.shape[:2] != first:
            raise DdnnError(f"images in {where} have different sizes: {members[0].name} is {first[1]}x{first[0]}, "
                            f"{member.name} is {array.shape[1]}x{array.shape[0]}; give images of one size "
                            "(or use data.name=imagefolder, which resizes)")
    if any(a.ndim == 3 for a in arrays):  # colour wins: grey images get three equal channels
        arrays = [a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2) for a in arrays]
    stacked = np.stack(arrays)
    stacked = stacked[..., None] if stacked.ndim == 3 else stacked
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


def _labels(members: list[Member], classes: list[str]) -> torch.Tensor:
    index = {name: i for i, name in enumerate(classes)}
    return torch.tensor([index[m.label] for m in members], dtype=torch.long)


def _check_classes(found: dict[str, SplitFiles]) -> list[str]:
    """The class names (sorted, as torchvision's ImageFolder); every split has the same non-empty ones."""
    train = found["train"]
    for split, files in found.items():
        if files.classes != train.classes:
            odd = sorted(files.classes ^ train.classes)
            raise DdnnError(f"class folder(s) {', '.join(odd[:5])} are in only one of the splits train "
                            f"({train.where}) and {split} ({files.where}); every split needs the same classes")
    for files in found.values():
        empty = sorted(files.classes - {m.label for m in files.members})
        if empty:
            raise DdnnError(f"class folder {empty[0]} in {files.where} holds no images (.jpg, .png, ...); "
                            "remove the folder or add its images")
    if len(train.classes) < 2:
        raise DdnnError(f"{train.where} must hold at least 2 class folders, found {len(train.classes)}")
    return sorted(train.classes)


def decode_splits(root: Path, workers: int) -> tuple[dict[str, Split], list[str]]:
    """Every split under `root` decoded (train, and test and/or val) and the class names."""
    found = read_splits(root)
    classes = _check_classes(found)
    splits = {split: Split(decode_images(files.members, files.where, workers), _labels(files.members, classes))
              for split, files in found.items()}
    if len({s.images.shape[1:] for s in splits.values()}) > 1:
        raise DdnnError(f"the splits under {root} hold images of different sizes or channels "
                        f"({', '.join(f'{k} {list(v.images.shape[1:])}' for k, v in splits.items())}); "
                        "give every split images of one size")
    return splits, classes


# -- the decoded cache -------------------------------------------------------------------------

def _load_cached(path: Path, key: str) -> tuple[dict[str, Split], list[str]] | None:
    try:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["key"]) != key:
                return None
            splits = {str(s): Split(torch.from_numpy(saved[f"{s}_images"]), torch.from_numpy(saved[f"{s}_labels"]))
                      for s in saved["splits"]}
            return splits, [str(c) for c in saved["classes"]]
    except (OSError, KeyError, ValueError, EOFError):
        return None  # missing or damaged: decode again (and replace it)


def _save_cached(path: Path, key: str, splits: dict[str, Split], classes: list[str]) -> None:
    arrays = {"key": np.array(key), "classes": np.array(classes), "splits": np.array(list(splits))}
    for name, split in splits.items():
        arrays[f"{name}_images"] = split.images.numpy()
        arrays[f"{name}_labels"] = split.labels.numpy()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError:
        return  # a read-only cache folder only costs the next run a decode
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except OSError:  # e.g. a full disk: keep no partial file
        Path(tmp).unlink(missing_ok=True)


def load_splits(root: Path, workers: int, cache: bool) -> tuple[dict[str, Split], list[str]]:
    """The decoded splits, from the cache when it holds this exact content."""
    if not cache:
        return decode_splits(root, workers)
    key = hashlib.sha256(f"{CACHE_VERSION}:{fingerprint(root)}".encode()).hexdigest()
    path = cache_folder() / f"smallfolder-{key[:24]}.npz"
    cached = _load_cached(path, key)
    if cached is not None:
        return cached
    splits, classes = decode_splits(root, workers)
    _save_cached(path, key, splits, classes)
    return splits, classes


@DATASETS.register("smallfolder", help="small images (e.g. CIFAR-10 as JPEG) in class folders or .tar/.tar.gz "
                                       "under data.root/{train,test}/<class>/, decoded once into memory")
def load_small_folder(cfg) -> Dataset:
    if cfg.root is None:
        raise DdnnError("dataset smallfolder needs data.root: the folder (or .tar/.tar.gz) holding train/ and test/")
    splits, classes = load_splits(Path(cfg.root).expanduser(), cfg.workers, cfg.cache)
    test = splits.get("test", splits.get("val"))
    val = splits["val"] if "test" in splits and "val" in splits else None  # both given: val/ is the validation split
    return carve("smallfolder", splits["train"], test, len(classes), cfg.val_fraction, cfg.test_fraction,
                 cfg.split_seed, cfg.train_limit, val=val)
