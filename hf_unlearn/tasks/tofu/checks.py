"""Checks of a TOFU run's inputs when it starts, before anything is fine-tuned, unlearned or evaluated: every data
selection and evaluation split is loaded and checked, and every model source is where it says; and the batch of every
training stage, which the process-count check reads (`training_batches`).

Without them a broken `forget05.jsonl` line, a selection past the end of its config or a missing evaluation column
surfaced only at the stage that first read it, after the fine-tunes and evaluations before it. Errors are one line
(`ValueError` / `FileNotFoundError`) naming the recipe key; warnings give counts only, never text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...evaluation.tofu import load_eval_rows
from ...models import check_model_source, hub_snapshot, is_hub_offline, looks_like_local_path
from ...runtime.distributed import main_process_print
from ...runtime.launch import TrainingBatch, method_batches, training_batch
from ...trainers import METHODS
from .data import describe_selections, select_rows
from .recipe import ModelSpec, TofuPlan

__all__ = ["check_model_sources", "check_tofu_data", "check_tofu_inputs", "training_batches"]


def check_tofu_inputs(plan: TofuPlan, *, dry_run: bool = False, command: str = "run") -> dict[str, Any]:
    """Everything a TOFU `command` reads, checked now: the model sources (`check_model_sources`) and, unless the data
    is on the Hub and this is a dry run (nothing is downloaded then), the data (`check_tofu_data`). `finetune` reads
    only the base model and the training selections (none when both models are given).

    Returns the data counts (empty when the data was not checked). Raises ValueError / FileNotFoundError naming the
    recipe key and the problem."""
    finetune_only = command == "finetune"
    check_model_sources(plan, dry_run=dry_run, given=not finetune_only)
    if dry_run and (plan.data_dir is None or not Path(plan.data_dir).expanduser().is_dir()):
        return {}  # Hub data is not downloaded in a dry run; a missing local folder is stated by the plan
    if finetune_only and not plan.train_data:
        return {}
    return check_tofu_data(plan, training_only=finetune_only)


def check_model_sources(plan: TofuPlan, *, dry_run: bool = False, given: bool = True) -> None:
    """The base (when a model is fine-tuned) and, with `given`, the given models exist: a local path (`./x`,
    `models/nope`, `/abs/path`) is a folder now, a `pkg:` package is installed, and (in a real run, offline) a Hub
    id is in the local cache."""
    sources = {f"models.{role}": spec for role, spec in plan.given.items()} if given else {}
    if plan.base is not None and plan.train_data:
        sources["models.base"] = plan.base
    for where, spec in sources.items():
        try:
            _check_spec(spec, check_cache=not dry_run)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{where}.name_or_path: {error}") from None
        if spec.adapter is not None and not (Path(spec.adapter) / "adapter_config.json").is_file():
            raise FileNotFoundError(
                f"{where}.adapter: {spec.adapter!r} is not a PEFT adapter folder (no adapter_config.json)."
            )


def _check_spec(spec: ModelSpec, check_cache: bool) -> None:
    path = spec.path  # `pkg:NAME` resolved (FileNotFoundError when the package is not installed)
    check_model_source(path, spec.gguf_file, hub=check_cache)  # a dry run looks nothing up on the Hub
    offline = check_cache and is_hub_offline() and not looks_like_local_path(path)
    if offline and hub_snapshot(path, spec.gguf_file) is None:
        raise FileNotFoundError(
            f"model {path!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: pass a local model "
            f"folder instead, or download it first where there is a network (`hf download {path}`)."
        )


def check_tofu_data(plan: TofuPlan, *, training_only: bool = False) -> dict[str, Any]:
    """Load every selection (fine-tuning and unlearning data) and every evaluation split as the run will: broken
    JSON lines (file and line), unknown configs, `rows` past the end, missing columns, empty sets. Warns when the
    unlearning retain set shares questions with the forget set (a count only). Returns row counts per selection.
    `training_only`: the fine-tuning selections alone (`hf-unlearn finetune`)."""
    counts: dict[str, Any] = {}
    for role, selections in plan.train_data.items():
        counts[f"models.{role}.train_data"] = len(_rows(selections, plan, f"models.{role}.train_data"))
    if training_only:
        return counts
    rows = {name: _rows(selections, plan, f"unlearn_data.{name}") for name, selections in plan.unlearn_data.items()}
    for name, data in rows.items():
        counts[f"unlearn_data.{name}"] = len(data)
    try:
        eval_rows = load_eval_rows(plan.evaluation.forget_split, plan.data_dir, plan.evaluation.item_limit)
    except (ValueError, FileNotFoundError) as error:
        raise _located(error, "evaluation data") from None
    counts["evaluation"] = {split: len(split_rows) for split, split_rows in eval_rows.items()}
    overlap = len(set(rows["forget"]["question"]) & set(rows["retain"]["question"]))
    if overlap:
        main_process_print(
            f"Warning: the unlearning retain set ({describe_selections(plan.unlearn_data['retain'])}) shares "
            f"{overlap} of its {len(rows['retain'])} question(s) with the forget set "
            f"({describe_selections(plan.unlearn_data['forget'])}, {len(rows['forget'])} rows): those questions are "
            "both unlearned and retained."
        )
    counts["unlearn_data.overlap_questions"] = overlap
    return counts


def _rows(selections, plan: TofuPlan, where: str):
    try:
        data = select_rows(selections, plan.data_dir)
    except (ValueError, FileNotFoundError) as error:
        raise _located(error, where) from None
    if len(data) == 0:
        raise ValueError(f"{where} ({describe_selections(selections)}) has no rows.")
    return data


def _located(error: Exception, where: str) -> Exception:
    """The error again, prefixed with the recipe key it concerns (same class for the CLI: one line)."""
    kind = FileNotFoundError if isinstance(error, FileNotFoundError) else ValueError
    return kind(f"{where}: {error}")


def training_batches(plan: TofuPlan, command: str) -> list[TrainingBatch]:
    """The batch of every training stage `command` runs (for the process-count check): the fine-tune when the recipe
    fine-tunes, the shared `unlearn` settings and each method that sets its own batch (`run` only)."""
    from trl import SFTConfig

    batches = []
    if plan.train_data:
        batches.append(training_batch("finetune", plan.finetune, SFTConfig, flags=command == "finetune"))
    if command == "run":
        classes = {label: METHODS[spec["method"]][0] for label, spec in plan.methods.items()}
        batches += method_batches(plan.unlearn, plan.methods, classes, flags=True)
    return batches
