"""The cached TOFU evaluation stage of a benchmark run (`hf-unlearn eval --output-dir`, the pipeline's `eval/`
folders): the core suite `evaluate_tofu` on one model, its `summary.json` and `items.json` kept in a stage folder of
`hf_unlearn.runtime.cache`, stamped with the fingerprint of what changes the numbers (model weights, data rows,
evaluation settings, tokenizer, retain reference, library versions) and nothing else (not paths, names, progress
output or timings). A later call with the same fingerprint reads the folder instead of evaluating again.

>>> summary = evaluate_tofu_stage(model, tokenizer, args, output_dir="eval/target", data_dir="tofu/")  # doctest: +SKIP
>>> summary["reused"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ...evaluation.tofu import (
    ITEMS_FILE,
    SUMMARY_FILE,
    RetainReference,
    TofuEvalArguments,
    check_pad_token,
    evaluate_rows,
    load_eval_rows,
    load_retain_reference,
)
from ...runtime.cache import STAMP_FILE, cached_stage, commit_stage, open_scratch
from ...runtime.distributed import broadcast_object, is_main_process
from ...runtime.hashing import model_sha256, sha256_json
from ...runtime.io import atomic_write_json
from ...runtime.versions import environment_versions

__all__ = ["check_stage_folder", "evaluate_tofu_stage", "evaluation_fingerprint"]

_STAGE_FILES = (SUMMARY_FILE, ITEMS_FILE, STAMP_FILE)


def evaluate_tofu_stage(
    model: torch.nn.Module,
    tokenizer: Any,
    args: TofuEvalArguments | None = None,
    *,
    output_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    retain_logs: str | os.PathLike | None = None,
    model_name: str | None = None,
    reuse: bool = True,
    show_progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """`evaluate_tofu` (same arguments), with its results in the stage folder `output_dir`: reused when model, data
    and settings hash to the same fingerprint (`reuse=False`: always recomputed), else computed and written
    (atomically: an interrupted evaluation never leaves a summary behind). Returns the summary with `"items"`,
    `"reused"` and the fingerprint.

    `output_dir` holds only this evaluation's files: a folder with other files is refused, never emptied. Runs on
    every process of a launch; the main process hashes the model and writes, all return the same result.
    """
    started = time.perf_counter()
    args = dataclasses.replace(args or TofuEvalArguments(), **overrides)
    path = Path(output_dir)
    check_pad_token(tokenizer)
    check_stage_folder(path)
    tic = time.perf_counter()
    retain_ref = load_retain_reference(retain_logs, args.forget_split) if retain_logs is not None else None
    rows = load_eval_rows(args.forget_split, data_dir, args.item_limit)
    timing = {"load_data": time.perf_counter() - tic}

    tic = time.perf_counter()
    # The main process hashes the weights; every process decides from the same fingerprint.
    parts = broadcast_object(
        evaluation_fingerprint(model, tokenizer, args, rows, retain_ref) if is_main_process() else None
    )
    timing["fingerprint"] = time.perf_counter() - tic
    if reuse and cached_stage(path, parts, "TOFU evaluation") is not None:
        summary = json.loads((path / SUMMARY_FILE).read_text())
        items = json.loads((path / ITEMS_FILE).read_text())["splits"]
        if show_progress and is_main_process():
            for notice in summary.get("notices") or []:  # a reused result keeps its caveats in the log
                print(f"Note: {notice}", file=sys.stderr, flush=True)
        return dict(summary, reused=True, items=items)

    scratch = open_scratch(path, parts)
    result = evaluate_rows(
        model,
        tokenizer,
        args,
        rows,
        retain_ref,
        data_dir=data_dir,
        model_name=model_name,
        show_progress=show_progress,
        timing=timing,
        started=started,
    )
    items = result.pop("items")
    summary = {
        **result,
        "data": {**result["data"], "sha256": parts["data"]},
        "versions": environment_versions(),
        "fingerprint": sha256_json(parts),
        "fingerprint_parts": parts,
        "reused": False,
    }
    if is_main_process():
        atomic_write_json(scratch / ITEMS_FILE, {"fingerprint": summary["fingerprint"], "splits": items})
        atomic_write_json(scratch / SUMMARY_FILE, summary)
    commit_stage(scratch, path, parts, {"seconds": summary["timing_s"]["total"]}, drop=())
    return dict(summary, items=items)


def evaluation_fingerprint(
    model: torch.nn.Module,
    tokenizer: Any,
    args: TofuEvalArguments,
    rows: dict[str, list[dict[str, Any]]],
    retain_ref: RetainReference | None,
) -> dict[str, str]:
    """What an evaluation's numbers depend on, one hash per part (the stamp says which part changed): the weights, the
    rows, the settings as asked (batch sizes included: they change the float rounding), the tokenizer, the retain
    reference and the library versions."""
    return {
        "model": model_sha256(model),
        "data": sha256_json(rows),
        "settings": sha256_json(args.settings()),
        "tokenizer": sha256_json(_tokenizer_identity(tokenizer)),
        "retain_reference": retain_ref.sha256 if retain_ref else "none",
        "versions": sha256_json(environment_versions()),
    }


def _tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)  # fast tokenizers: the whole vocabulary and merges
    return {
        "class": type(tokenizer).__name__,
        "backend_sha256": sha256_json(backend.to_str()) if backend is not None else None,
        "vocab_size": len(tokenizer),
        "chat_template": getattr(tokenizer, "chat_template", None),
        "special": {
            "eos": tokenizer.eos_token_id,
            "pad": tokenizer.pad_token_id,
            "bos": getattr(tokenizer, "bos_token_id", None),
        },
    }


def check_stage_folder(path: Path) -> None:
    """Refuse a folder holding anything but an evaluation's files: committing a stage replaces the whole folder."""
    if not path.exists():
        return
    if not path.is_dir():
        raise NotADirectoryError(f"The evaluation folder {path} is a file, not a folder.")
    foreign = sorted(
        entry.name
        for entry in path.iterdir()
        if entry.name not in _STAGE_FILES and not any(entry.name.startswith(f".{name}.") for name in _STAGE_FILES)
    )
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise FileExistsError(
            f"The evaluation folder {path} holds other files ({shown}): it is replaced as a whole when the results "
            "are written, so choose a new or empty folder."
        )
