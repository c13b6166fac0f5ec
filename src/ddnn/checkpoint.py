"""Checkpoints as plain data: written atomically with a checksum, read with torch.load(weights_only=True).

A checkpoint carries the sha256 of its own content (`digest`), so a flipped bit anywhere in the tensors
or the metadata is found on load, not only a truncated archive. Saving keeps the file it replaces as
`<name>.prev.pt` until the new one has been written, synced and read back, so one good copy always exists.
"""

import hashlib
import io
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ddnn.errors import DdnnError
from ddnn.files import discard, os_error, temp_path, write_bytes

FORMAT = "ddnn-checkpoint/2"
OLD_FORMATS = ("ddnn-checkpoint/1",)  # before checksums: still readable, nothing to verify


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save into memory, then files.write_bytes: a temp file in the same folder, fsync, rename.

    A crash leaves either the old file or the new one, never half of one; a full disk is a one-line
    error (torch's own writer would fail deep in C++).
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getbuffer())


def read_torch_file(path: Path, what: str, fix: str) -> Any:
    """torch.load(weights_only=True) of a file, with one-line errors: `what` names the file's role
    ("checkpoint", "init_from file") and `fix` says what to do about a corrupt one."""
    path = Path(path)
    corrupt = f"{what} {path} is corrupt or truncated"
    if path.is_dir():
        raise DdnnError(f"{what} {path} is a folder, not a file; give a file (a run folder's best.pt or last.pt)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError as err:
        raise DdnnError(f"cannot read {what} {path}: {err.strerror}") from None
    kind = _other_kind(path)
    if kind:
        raise DdnnError(f"{what} {path} is {kind}, not a checkpoint (weights with their config); "
                        "give the run's best.pt or last.pt")
    # torch.save writes a zip archive (or, in its legacy format, a pickle: protocol byte 0x80)
    if not zipfile.is_zipfile(path) and not (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        raise DdnnError(f"{corrupt} (neither a torch zip archive nor a pickle); {fix}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on formats: the error below says what matters
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        called = re.search(r"GLOBAL ([\w.]+)", str(err))
        what_it_does = f"loading it would call {called.group(1)}" if called else "it holds pickled objects"
        raise DdnnError(f"{what} {path} was refused: {what_it_does}, more than plain data, and ddnn never runs "
                        "code from a file; use a checkpoint written by ddnn train") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise DdnnError(f"{corrupt} ({str(err).splitlines()[0][:120]}); {fix}") from None


def _other_kind(path: Path) -> str | None:
    """What a file given as a checkpoint is instead, when it is a known other kind (ddnn export's files)."""
    if path.suffix == ".onnx":
        return "an ONNX model (as ddnn export writes: run it with onnxruntime)"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "a TorchScript model (as ddnn export writes: run it with torch.jit.load)"
    return None


def sha256_of(path: Path) -> str:
    """The file's sha256, so a run or an export records exactly which bytes it used."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _feed(h: "hashlib._Hash", obj: Any) -> None:
    """Hash a nested structure of dicts, lists, tensors and scalars by value and shape, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            h.update(repr(key).encode())
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for item in obj:
            _feed(h, item)
    else:
        h.update(f"S{type(obj).__name__}:{obj!r}".encode())


def digest(ckpt: dict[str, Any]) -> str:
    """sha256 of a checkpoint's content, its own `digest` entry left out."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in ckpt.items() if k != "digest"})
    return h.hexdigest()


def previous_of(path: Path) -> Path:
    """Where the checkpoint that `path` replaced is kept (last.pt -> last.prev.pt)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(ckpt: dict[str, Any], path: Path) -> None:
    """Write `ckpt` with its digest; the replaced file survives as `<name>.prev.pt`.

    Order: new content to a temp file (synced), read back and verified, then the old file moves to
    .prev and the temp file takes its name. A crash at any point leaves at least one good checkpoint.
    """
    path = Path(path)
    ckpt = {**ckpt, "format": FORMAT}
    ckpt["digest"] = digest(ckpt)
    staged = temp_path(path, "staged")
    try:
        save_atomic(ckpt, staged)
        check_digest(read_torch_file(staged, "checkpoint", "the disk may be failing; check it"), staged)
        try:
            if path.exists():
                os.replace(path, previous_of(path))
            os.replace(staged, path)
        except OSError as err:
            raise os_error(err, path) from None
    finally:
        discard(staged)
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make the renames durable (a rename lives in the folder's entry, not in the file)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_digest(ckpt: Any, path: Path) -> dict[str, Any]:
    """`ckpt` if it is a ddnn checkpoint whose content matches its digest."""
    if not isinstance(ckpt, dict) or ckpt.get("format") not in (FORMAT, *OLD_FORMATS):
        raise DdnnError(f"{path} is not a ddnn checkpoint (no '{FORMAT}' marker)")
    if ckpt["format"] == FORMAT and ckpt.get("digest") != digest(ckpt):
        raise DdnnError(f"checkpoint {path} is corrupt (its content does not match its checksum)"
                        f"{_fallback_hint(path)}")
    return ckpt


def _fallback_hint(path: Path) -> str:
    prev = previous_of(path)
    return f"; the previous good one is kept as {prev.name}" if prev.is_file() else "; use another checkpoint of the run"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A ddnn checkpoint as a dict; a missing, corrupt, tampered or foreign file is a one-line DdnnError."""
    path = Path(path)
    if not path.exists():
        raise DdnnError(f"checkpoint {path} does not exist; give a run folder's last.pt or best.pt")
    return check_digest(read_torch_file(path, "checkpoint", _fallback_hint(path).lstrip("; ")), path)


def load_checkpoint_or_previous(path: Path, log) -> tuple[dict[str, Any], Path]:
    """`path`'s checkpoint, or, when it is missing or corrupt, the one it replaced (saying so)."""
    try:
        return load_checkpoint(path), Path(path)
    except DdnnError as err:
        prev = previous_of(path)
        if not prev.is_file():
            raise
        ckpt = load_checkpoint(prev)
        log(f"ddnn: {err}; using {prev.name} (epoch {ckpt.get('epoch')}) instead")
        return ckpt, prev
