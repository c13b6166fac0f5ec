"""Which checkpoint a derived file came from: profile.json and every export record the sha256 of the
checkpoint file (and the run id) they were made from, so a file made before the checkpoint changed
(`ddnn calibrate` rewrites it) is found out instead of silently used."""

from pathlib import Path

from ddnn import run_files
from ddnn.checkpoint import sha256_of
from ddnn.errors import DdnnError


def checkpoint_identity(run) -> dict:
    """What a derived file records of its checkpoint: its sha256 and the run id."""
    return {"checkpoint_sha256": sha256_of(run.checkpoint), "run_id": run.cfg.run_id}


def check_current(derived: dict, folder: Path, what: str, fix: str) -> None:
    """Refuse `derived` (a file's content, e.g. profile.json) when its checkpoint in `folder` has changed
    since it was made; files from before ddnn recorded the sha256 are taken as they are."""
    recorded = derived.get("checkpoint_sha256")
    name = Path(str(derived.get("checkpoint", ""))).name
    if not recorded or not name:
        return
    path = Path(folder) / name
    if not path.is_file():
        raise DdnnError(f"{what} was made from {path}, which is gone; {fix}")
    if sha256_of(path) != recorded:
        raise DdnnError(f"{what} was made from {path} as it was before it changed (e.g. by ddnn calibrate): "
                        f"its numbers may no longer hold; {fix}")


def stale_files(folder: Path, checkpoint: Path, old_sha256: str) -> list[str]:
    """Files of the run folder derived from `checkpoint` while it had `old_sha256` (profile.json, exports)."""
    folder = Path(folder)
    candidates = [folder / run_files.PROFILE_JSON, *sorted((folder / run_files.EXPORT).glob("*.json"))]
    stale = []
    for path in candidates:
        try:
            info = run_files.read_json(path, "")
        except DdnnError:
            continue
        source = info.get("source", info) if isinstance(info, dict) else {}
        if (isinstance(source, dict) and source.get("checkpoint_sha256") == old_sha256
                and Path(str(source.get("checkpoint", ""))).name == Path(checkpoint).name):
            stale.append(str(path.relative_to(folder)).removesuffix(".json") if path.parent != folder
                         else path.name)
    return stale
