"""Small tensor and file helpers shared by the trainers, the influence engine and the metrics."""

from __future__ import annotations

import json
import os
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

__all__ = ["IGNORE_INDEX", "atomic_write_json", "join_process_group", "package_version", "sequence_nll",
           "token_logprobs"]


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of every labelled next token, with the HF causal-LM shift.

    Args:
        logits: `(B, T, V)` model outputs.
        labels: `(B, T)` targets, `-100` where ignored (prompt, template, padding).

    Returns:
        `(logps, mask)`, both `(B, T-1)`: `logps[b, t] = log p(labels[b, t+1] | x_{<=t})`, zero where `mask` is False.
    """
    shift_logits = logits[:, :-1, :]  # (B, T-1, V)
    shift_labels = labels[:, 1:]  # (B, T-1)
    mask = shift_labels.ne(IGNORE_INDEX)
    # cross_entropy never materialises a (B, T, V) log-softmax copy beyond what it needs.
    nll = F.cross_entropy(
        shift_logits.transpose(1, 2).float(), shift_labels.masked_fill(~mask, 0), reduction="none"
    )  # (B, T-1)
    return (-nll).masked_fill(~mask, 0.0), mask


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed NLL of each sequence's labelled tokens and their count, both `(B,)`."""
    logps, mask = token_logprobs(logits, labels)
    return -logps.sum(dim=-1), mask.sum(dim=-1)


def atomic_write_json(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON so that a crash never leaves a half-written file: temp file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=False, default=_json_default)
            f.write("\n")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def package_version(package: str) -> str | None:
    """The installed version of `package`, or None: recorded with results so an upgrade is never mistaken for the same
    setup."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def join_process_group() -> str | None:
    """Join the process group that torchrun / `accelerate launch` set up; returns this process's device, or None for a
    single process without a GPU.

    On CPUs accelerate only goes multi-process when told to use the CPU (`accelerate launch --cpu` sets
    ACCELERATE_USE_CPU); under plain torchrun we set it, else every Trainer would silently train alone on all the data.
    """
    multi_process = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not (multi_process or torch.cuda.is_available()):
        return None
    if multi_process and not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    from accelerate import PartialState

    return str(PartialState().device)
