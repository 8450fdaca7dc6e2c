"""One run per output folder: a lock file naming its holder, taken before any work and removed at the end.

Two runs writing into one folder would overwrite each other's models and results and both report success. The lock
is `hf_unlearn_lock.json` in the folder, created atomically (`O_EXCL`), holding the pid, host, start time and
command of the run. A second run fails at once naming the holder. A lock whose process is gone (same host: the pid
no longer runs, or runs a newer process than the one that took the lock) is stale and taken over with a log line;
a lock from another host is never guessed about: the message says to delete the file when no run uses the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["LOCK_FILE", "OutputFolderLocked", "hold_output_lock"]

LOCK_FILE = "hf_unlearn_lock.json"


class OutputFolderLocked(RuntimeError):
    """Another run holds the output folder."""


@contextlib.contextmanager
def hold_output_lock(*folders: str | os.PathLike) -> Iterator[None]:
    """Hold the lock of every folder (created if missing) for the duration of the block; main process only."""
    from .distributed import is_main_process  # torch: not needed to name the error class (the CLI imports it)

    if not is_main_process():
        yield
        return
    holder = _holder()
    taken: list[Path] = []
    try:
        for folder in dict.fromkeys(Path(f).resolve() for f in folders):  # once each, in order
            taken.append(_acquire(folder, holder))
        yield
    finally:  # remove each lock that still holds what this run wrote (one that another run took over stays)
        for lock in taken:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(lock.read_text()) == holder:
                    lock.unlink()


def _holder() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "process_start": _process_start(os.getpid()),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": " ".join(sys.argv),
    }


def _acquire(folder: Path, holder: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    for _ in range(2):  # a second try after removing a stale lock
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = _read(lock)
            if other is None or not _is_stale(other):
                raise OutputFolderLocked(_locked_message(folder, lock, other)) from None
            print(
                f"Removing the stale lock of {folder} (pid {other.get('pid')}, started {other.get('started')}, "
                "no longer running).",
                flush=True,
            )
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(holder, handle, indent=2)
        return lock
    raise OutputFolderLocked(_locked_message(folder, lock, _read(lock)))


def _read(lock: Path) -> dict[str, Any] | None:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return None


def _is_stale(holder: dict[str, Any]) -> bool:
    """Only on this host: the holder's pid is gone, or belongs to a process started after the lock was taken."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    start = _process_start(holder["pid"])
    if start is None:
        return not _pid_running(holder["pid"])
    return holder.get("process_start") is not None and start != holder["process_start"]


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux `/proc`), which tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _locked_message(folder: Path, lock: Path, holder: dict[str, Any] | None) -> str:
    who = (
        f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
        if holder
        else "an unreadable lock"
    )
    return (
        f"Another run is using {folder} ({who}): wait for it, or choose another output folder (--output-dir). If no "
        f"run uses it any more, delete {lock}."
    )
