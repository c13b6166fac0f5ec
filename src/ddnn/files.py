"""Writing files so that nothing is lost: whole or not at all, and a failure is one line.

Every file ddnn writes (checkpoints, config.yaml, results, profiles, exports, reports) goes through
`write_bytes`: the bytes go to a temp file beside the target, named with the writer's process id,
are synced, and the temp file is renamed over the target. Any failure (a full disk, a folder that
cannot be written) removes the temp file, leaves what was there before, and is a one-line DdnnError
naming the path. A temp file left by a killed writer is found by its dead process id
(`remove_leftovers`).
"""

import contextlib
import errno
import os
import re
import secrets
from pathlib import Path

from ddnn.errors import DdnnError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_TEMP = re.compile(r"\.(\d+)-[0-9a-f]+\.(tmp|staged)$")  # .NAME.<pid>-<random>.tmp (or .staged)


class NoSpace(DdnnError):
    """The disk (or quota) is full: the file was not written, the one before it is kept."""


def os_error(err: OSError, path: Path, doing: str = "write") -> DdnnError:
    """One line for an OSError met while writing `path`: 'no space left on PATH' for a full disk."""
    if err.errno in NO_SPACE:
        return NoSpace(f"no space left on {path} (its disk or quota is full): it was not written and "
                       "what was saved before is kept; free some space and run the command again")
    return DdnnError(f"cannot {doing} {path}: {err.strerror or err}; choose a writable path")


def temp_path(path: Path, kind: str = "tmp") -> Path:
    """A hidden name beside `path` for a file being written by this process."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(3)}.{kind}")


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def write_into(tmp: Path, data: bytes | memoryview) -> None:
    """`data` into the new file `tmp`, synced to disk (OSError on failure; the caller removes `tmp`)."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes | memoryview) -> None:
    """Replace `path` by `data` atomically (making its folder if needed); DdnnError on failure."""
    path = Path(path)
    if path.is_dir():
        raise DdnnError(f"{path} is a folder; give a file name there (or remove the folder)")
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_into(tmp, data)
        os.replace(tmp, path)
    except OSError as err:
        raise os_error(err, path) from None
    finally:
        discard(tmp)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def discard(path: Path) -> None:
    """Remove a temp file if it is there; never raises."""
    with contextlib.suppress(OSError):
        Path(path).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        return True
    return True


def remove_leftovers(folder: Path) -> list[Path]:
    """Remove the temp files of killed writers in `folder`: those whose process is gone (a name without
    a process id is an older ddnn's, long gone); a live writer's are kept. Returns what was removed."""
    removed = []
    for pattern in (".*.tmp", ".*.staged"):
        for path in Path(folder).glob(pattern):
            match = _TEMP.search(path.name)
            if match is None or not _alive(int(match.group(1))):
                discard(path)
                removed.append(path)
    return removed
