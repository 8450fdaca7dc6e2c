"""Atomic file writes: a crash never leaves a half-written result behind (temp file in the same folder, then rename)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_json", "atomic_write_text", "check_writable_folder", "json_default"]


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
