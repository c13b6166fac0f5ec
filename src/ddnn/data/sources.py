"""Where the images of each split are: class-folder trees on disk, or .tar/.tar.gz archives of them.

Users keep small-image data sets as `train/<class>/*.jpg` plus `test/<class>/*.jpg` (or `val/`), as
folders or packed. All of these forms are read in place, without an extraction step:

- ROOT/train/ and ROOT/test/ as folders;
- ROOT/train.tar.gz and ROOT/test.tar.gz (also .tar, .tgz), each holding its split's class folders,
  with or without a leading `train/` (`test/`) folder inside;
- ROOT itself a .tar/.tar.gz holding train/ and test/ (optionally under one top-level folder).

Each file is read once, sequentially (a .tar.gz cannot be read any other way quickly), into
`Member`s: the split, the class folder, the path inside the split and the file's bytes. Decoding
them is data/smallfolder.py's job.
"""

import hashlib
import os
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ddnn.errors import DdnnError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
SPLITS = ("train", "val", "test")
_TAR_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


@dataclass(frozen=True)
class Member:
    """One image file: its class folder, its path inside the split, its bytes."""

    label: str
    name: str
    data: bytes


@dataclass
class SplitFiles:
    """What was read of one split: its images, every class folder seen (empty ones too), and where."""

    where: str
    members: list[Member] = field(default_factory=list)
    classes: set[str] = field(default_factory=set)


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def locate(root: Path) -> list[tuple[Path, str | None]]:
    """The folders and archives to read under `root`, each with the split it holds (None: an archive
    that holds several splits as folders)."""
    if not root.exists():
        raise DdnnError(f"data.root {root} does not exist; give the folder (or .tar/.tar.gz) that holds "
                        "train/ and test/ with one sub-folder of images per class")
    if is_archive(root):
        return [(root, None)]
    if not root.is_dir():
        raise DdnnError(f"data.root {root} is neither a folder nor a .tar/.tar.gz archive")
    found = []
    for split in SPLITS:
        candidates = [root / split] + [root / f"{split}{suffix}" for suffix in ARCHIVE_SUFFIXES]
        path = next((p for p in candidates if p.is_dir() or is_archive(p)), None)
        if path is not None:
            found.append((path, split))
    return found


def _folder_split(folder: Path, split: str) -> SplitFiles:
    got = SplitFiles(str(folder))
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        got.classes.add(sub.name)
        got.members += [Member(sub.name, str(f.relative_to(folder)), f.read_bytes()) for f in sorted(sub.rglob("*"))
                        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
    return got


def _place(parts: list[str], split: str | None) -> tuple[str, list[str]] | None:
    """(split, path inside it) of an archive entry, or None when it belongs to no split."""
    for depth in (0, 1):  # train/cat/1.jpg, or top/train/cat/1.jpg
        if len(parts) > depth and parts[depth] in SPLITS and (split is None or parts[depth] == split):
            return parts[depth], parts[depth + 1:]
    return (split, parts) if split is not None else None


def _archive_splits(path: Path, split: str | None) -> dict[str, SplitFiles]:
    got: dict[str, SplitFiles] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                placed = _place([p for p in info.name.split("/") if p not in ("", ".")], split)
                if placed is None or not placed[1] or (len(placed[1]) == 1 and not info.isdir()):
                    continue  # outside every split, the split folder itself, or a loose file beside the classes
                name, inside = placed
                one = got.setdefault(name, SplitFiles(f"{path} ({name})"))
                one.classes.add(inside[0])
                if info.isfile() and inside[-1].lower().endswith(IMAGE_EXTENSIONS):
                    one.members.append(Member(inside[0], "/".join(inside), tar.extractfile(info).read()))
    except _TAR_ERRORS as err:
        raise DdnnError(f"{path} is not a readable .tar/.tar.gz archive ({err}); re-create or re-download it") from None
    for one in got.values():
        one.members.sort(key=lambda m: m.name)
    return got


def read_splits(root: Path) -> dict[str, SplitFiles]:
    """Every split found under `root`, read: train, and test and/or val."""
    found: dict[str, SplitFiles] = {}
    for path, split in locate(root):
        found.update(_archive_splits(path, split) if is_archive(path) else {split: _folder_split(path, split)})
    if "train" not in found:
        raise DdnnError(f"no train split under {root}: expected {root}/train/ (one folder of images per class) "
                        f"or {root}/train.tar.gz")
    if "test" not in found and "val" not in found:
        raise DdnnError(f"no test split under {root}: expected {root}/test/ (or val/), or test.tar.gz beside train")
    return found


def fingerprint(root: Path) -> str:
    """sha256 naming the content under `root`: archives by their bytes, folders by every file's path,
    size and modification time (reading 60,000 small files costs as much as decoding them)."""
    h = hashlib.sha256()
    for path, split in locate(root):
        h.update(f"{path.name}:{split}\n".encode())
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file():
                    st = f.stat()
                    h.update(f"{f.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        else:
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def cache_folder() -> Path:
    """Where decoded copies are kept: $DDNN_CACHE, else $XDG_CACHE_HOME/ddnn, else ~/.cache/ddnn."""
    if os.environ.get("DDNN_CACHE"):
        return Path(os.environ["DDNN_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ddnn"
