"""Atomic file writes: a crash never leaves a half-written result behind (temp file in the same folder, then rename)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "OWNER_FILE",
    "atomic_path",
    "atomic_write_json",
    "atomic_write_text",
    "check_own_folder",
    "check_writable_folder",
    "claim_folder",
    "json_default",
]

# Written into every folder a run writes to (output, models): the folder is hf-unlearn's, a later run may replace
# what it made there. A non-empty folder without it holds the user's own files and is refused.
OWNER_FILE = "hf_unlearn_folder.json"
# What an earlier run (before OWNER_FILE existed) left at the top of its folders: such a folder is hf-unlearn's too.
_RUN_FILES = ("hf_unlearn_lock.json", "hf_unlearn_stage.json")


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on any error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, payload: Any) -> None:
    """Write `payload` as indented JSON atomically (tensors and numpy values become lists/numbers)."""
    atomic_write_text(path, json.dumps(payload, indent=2, default=json_default) + "\n")


def check_writable_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create `path` if needed and prove it takes a file, before any work: a file in its place, a read-only parent
    or a full disk fail now in one line instead of after an hour of training."""
    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise NotADirectoryError(f"The {what} {path} cannot be created: {blocker} is a file, not a folder.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".hf_unlearn_write_check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise PermissionError(f"The {what} {path} is not writable ({error.strerror or error}).") from None
    return path


def check_own_folder(path: str | os.PathLike, what: str = "output folder") -> None:
    """Refuse a non-empty folder that hf-unlearn did not create (no `OWNER_FILE`, nothing an earlier run writes):
    a run replaces the models and results it finds in its folders, so the user's own `models/original/` or
    `results.json` there would be lost. A missing or empty folder, or one a run made, passes.

    Raises:
        FileExistsError: one line naming the folder and a few of its entries."""
    path = Path(path)
    if not path.is_dir() or (path / OWNER_FILE).is_file():
        return
    entries = sorted(entry.name for entry in path.iterdir())
    if not entries or _made_by_a_run(path, entries):
        return
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    raise FileExistsError(
        f"The {what} {path} holds files hf-unlearn did not write ({shown}): a run would replace its models and "
        "results there. Choose a new or empty folder, or move those files."
    )


def claim_folder(path: str | os.PathLike, command: str) -> None:
    """Mark `path` as a folder runs write to (`OWNER_FILE`), once."""
    marker = Path(path) / OWNER_FILE
    if not marker.is_file():
        atomic_write_json(marker, {"written_by": "hf-unlearn", "command": command})


def _made_by_a_run(path: Path, entries: list[str]) -> bool:
    """A folder runs wrote to without claiming it at the top: an earlier run's from before `OWNER_FILE` (its
    `results.json`, a lock, stamped stages) or one holding a folder a run claimed."""
    if any(name in _RUN_FILES for name in entries):
        return True
    try:
        log = json.loads((path / "results.json").read_text())
        if isinstance(log, dict) and {"stages", "environment", "complete"} <= set(log):
            return True
    except (OSError, ValueError):
        pass
    # A folder a run made inside it (`hf-unlearn finetune` claims only the models folder), or a stamped stage.
    return any((path / name / marker).is_file() for name in entries for marker in (OWNER_FILE, *_RUN_FILES))


def json_default(obj: Any) -> Any:
    """JSON for tensors, numpy values and paths."""
    if hasattr(obj, "tolist"):  # torch tensors, numpy arrays and scalars
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
