"""Influence results saved with the arguments that produced them; a mismatched re-run refuses to reuse them.

One safetensors file: tensors `scores` (and optionally `weights`), metadata `format`, `arguments` (JSON of
`InfluenceArguments`) and an optional caller-chosen `fingerprint` (e.g. `dataset_fingerprint(forget)` plus the
checkpoint step), which the IMU trainer can drop into its checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .arguments import InfluenceArguments

__all__ = [
    "INFLUENCE_FILE_NAME",
    "InfluenceMismatchError",
    "InfluenceRecord",
    "dataset_fingerprint",
    "load_influence",
    "save_influence",
]

INFLUENCE_FILE_NAME = "influence_scores.safetensors"
_FORMAT = "hf_unlearn.influence/1"


class InfluenceMismatchError(ValueError):
    """Saved scores were computed with other arguments, or for another dataset/model state."""


@dataclass
class InfluenceRecord:
    scores: torch.Tensor  # (N,)
    weights: torch.Tensor | None  # (N,) if saved
    args: InfluenceArguments
    fingerprint: str | None


def save_influence(
    path: str | os.PathLike,
    scores: torch.Tensor,
    args: InfluenceArguments,
    *,
    fingerprint: str | None = None,
    weights: torch.Tensor | None = None,
) -> None:
    """Write scores (and weights) with their arguments, atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"scores": scores.detach().cpu().contiguous()}
    if weights is not None:
        if weights.shape != scores.shape:
            raise ValueError(f"weights {tuple(weights.shape)} and scores {tuple(scores.shape)} differ in shape.")
        tensors["weights"] = weights.detach().cpu().contiguous()
    metadata = {"format": _FORMAT, "arguments": json.dumps(args.to_dict(), sort_keys=True)}
    if fingerprint is not None:
        metadata["fingerprint"] = fingerprint
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_influence(
    path: str | os.PathLike, expected_args: InfluenceArguments | None = None, *, fingerprint: str | None = None
) -> InfluenceRecord:
    """Read saved scores; with `expected_args`/`fingerprint`, refuse (InfluenceMismatchError) anything else.

    Only the arguments that change the scores are compared (`InfluenceArguments.score_fields()`: curvature,
    damping, relative_damping); batch size or caching never invalidate a result.
    """
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != _FORMAT:
            found = metadata.get("format")
            raise InfluenceMismatchError(f"{path} is not an hf_unlearn influence file (format {found!r}).")
        scores = f.get_tensor("scores")
        weights = f.get_tensor("weights") if "weights" in f.keys() else None  # noqa: SIM118 (safe_open has no __contains__)
    saved = InfluenceArguments.from_dict(json.loads(metadata["arguments"]))
    if expected_args is not None:
        want, have = expected_args.score_fields(), saved.score_fields()
        diff = {k: (have[k], want[k]) for k in want if have[k] != want[k]}
        if diff:
            details = ", ".join(f"{k}: saved {a!r} vs requested {b!r}" for k, (a, b) in diff.items())
            raise InfluenceMismatchError(
                f"Influence scores in {path} were computed with other arguments ({details}); recompute them."
            )
    saved_fp = metadata.get("fingerprint")
    if fingerprint is not None and saved_fp != fingerprint:
        raise InfluenceMismatchError(
            f"Influence scores in {path} belong to fingerprint {saved_fp!r}, not "
            f"{fingerprint!r} (another dataset or model state); recompute them."
        )
    return InfluenceRecord(scores=scores, weights=weights, args=saved, fingerprint=saved_fp)


def dataset_fingerprint(dataset: Any) -> str:
    """SHA-256 of every row's `input_ids`, `labels` and `attention_mask`, in order: names a tokenised forget set."""
    digest = hashlib.sha256()
    digest.update(str(len(dataset)).encode())
    for i in range(len(dataset)):
        row = dataset[i]
        for key in ("input_ids", "labels", "attention_mask"):
            value = row.get(key)
            digest.update(key.encode())
            if value is not None:
                digest.update(torch.as_tensor(value, dtype=torch.long).reshape(-1).numpy().tobytes())
    return digest.hexdigest()
