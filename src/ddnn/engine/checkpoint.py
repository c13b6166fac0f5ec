"""Checkpoints as plain data: written atomically, read with torch.load(weights_only=True)."""

import hashlib
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from ddnn.errors import DdnnError

FORMAT = "ddnn-checkpoint/1"


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, fsync, then rename over `path`.

    A crash leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_torch_file(path: Path, what: str, fix: str) -> Any:
    """torch.load(weights_only=True) of a file, with one-line errors: `what` names the file's role
    ("checkpoint", "init_from file") and `fix` says what to do about a corrupt one."""
    path = Path(path)
    corrupt = f"{what} {path} is corrupt or truncated"
    with open(path, "rb") as fh:
        head = fh.read(2)
    # torch.save writes a zip archive (or, in its legacy format, a pickle: protocol byte 0x80)
    if not zipfile.is_zipfile(path) and not (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        raise DdnnError(f"{corrupt} (neither a torch zip archive nor a pickle); {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unsafe content"
        raise DdnnError(f"{what} {path} was refused: it holds more than plain data ({first[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise DdnnError(f"{corrupt} ({str(err).splitlines()[0][:120]}); {fix}") from None


def sha256_of(path: Path) -> str:
    """The file's sha256, so a run or an export records exactly which bytes it used."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A ddnn checkpoint as a dict; a missing, corrupt or foreign file is a one-line DdnnError."""
    path = Path(path)
    if not path.is_file():
        raise DdnnError(f"checkpoint {path} does not exist; give a run folder's last.pt or best.pt")
    ckpt = read_torch_file(path, "checkpoint", "use another checkpoint of the run")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise DdnnError(f"{path} is not a ddnn checkpoint (no '{FORMAT}' marker)")
    return ckpt
