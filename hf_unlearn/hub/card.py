"""Model cards (`huggingface_hub.ModelCard`): YAML metadata merged with an existing card's (PEFT's), the method and
its hyperparameters, data by name and row count, the evaluation summary, versions and a loading snippet. Settings and
numbers only: a card never receives training text."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from .artifacts import ARTIFACTS, HEAD_DELTA_FILE
from .push import hub_id_or_none

__all__ = [
    "ModelCardInfo",
    "adapter_settings",
    "build_model_card",
    "config_hyperparameters",
    "default_versions",
    "loading_snippet",
    "write_model_card",
]

_ARTIFACT_TEXT = {
    "adapter": "the PEFT adapter only (apply it to the base model)",
    "head": f"the unlearned LM head only (`{HEAD_DELTA_FILE}`; every other weight is the base model's)",
    "full": "the full model",
}


# ------------------------------------------------------------------------------------------------ model cards

# TrainingArguments fields about where things are written, logged, pushed or run: not hyperparameters of the model.
_NOT_HYPERPARAMETERS = re.compile(
    r"token|_dir$|^hub_|push|report_to|^logging|run_name|tqdm|^save_|resume|overwrite|^dataloader|^eval|device|"
    r"^ddp|^fsdp|deepspeed|local_rank|^accelerator|^debug|^include_|^ignore_data_skip|^past_index|^label_names|"
    r"^prediction|^metric_for|^greater_is|^load_best|^torch_compile|^use_cpu|^restore_callback|^log_|^trackio|"
    r"^project|^batch_eval|^average_tokens|^parallelism|^skip_memory|^full_determinism|^disable_|^remove_unused"
)
_ALWAYS_SHOWN = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "optim",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "seed",
    "bf16",
    "fp16",
)


def _plain(value: Any) -> Any:
    value = getattr(value, "value", value)  # enums (optimizer, schedule)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def config_hyperparameters(config: Any) -> dict[str, Any]:
    """Every hyperparameter of an unlearning config: all fields the method and `UnlearnConfig` declare, the main
    optimisation settings, and any other `TrainingArguments` field changed from its default (paths, logging, hub
    and launch settings left out; the token never)."""
    from transformers import TrainingArguments

    inherited = {f.name: f for f in dataclasses.fields(TrainingArguments)}
    values = {}
    for f in dataclasses.fields(config):
        if not f.init or f.name == "push_full_model":
            continue
        value = _plain(getattr(config, f.name))
        if f.name not in _ALWAYS_SHOWN:
            if _NOT_HYPERPARAMETERS.search(f.name):
                continue
            if inherited.get(f.name) is f:  # a TrainingArguments field we did not redeclare: shown when changed
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                if value == _plain(None if default is dataclasses.MISSING else default):
                    continue
        values[f.name] = value
    return values


def adapter_settings(peft_config: Any) -> dict[str, Any]:
    """The settings of a PEFT config that say what the adapter is (rank, alpha, dropout, target modules, ...)."""
    keys = ("peft_type", "r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save", "bias", "use_rslora")
    settings = peft_config.to_dict() if hasattr(peft_config, "to_dict") else dict(peft_config)
    return {key: _plain(settings[key]) for key in (*keys, "use_dora") if settings.get(key) not in (None, False)}


def default_versions() -> dict[str, str | None]:
    """The versions of the libraries a pushed model was made with, for callers that pass none (the pipelines pass
    their fingerprint's versions)."""
    import importlib

    versions = {}
    for module in ("hf_unlearn", "transformers", "peft", "torch", "accelerate", "huggingface_hub"):
        try:
            versions[module.replace("_", "-")] = getattr(importlib.import_module(module), "__version__", None)
        except ImportError:
            versions[module.replace("_", "-")] = None
    return versions


@dataclass
class ModelCardInfo:
    """What a model card says (settings and numbers only: never training text).

    Parameters:
        title: the card's heading (the repository name).
        summary: one paragraph saying what the model is.
        method: the unlearning method (`"NPO"`), None for a model that is not unlearned (a fine-tuned TOFU model).
        artifact: what the folder holds (`ARTIFACTS`); decides the loading snippet.
        repo_id: where it is (or will be) on the Hub; None for a local card.
        base_model: the Hub id of the model it was made from (metadata), or None.
        base_model_description: the base model in words when it is not on the Hub (a local path...).
        library_name: `"peft"` for an adapter, else `"transformers"`.
        tags, datasets: extra metadata tags and Hub dataset ids.
        hyperparameters: `setting -> value` (`config_hyperparameters`, LoRA settings, ...).
        data: `role -> "selection (N rows)"` (`forget`, `retain`, ...).
        evaluation: a markdown table of the evaluation summary.
        versions: `library -> version`.
        notes: extra lines (run time, steps, ...).
        tokenizer: whether the model has a tokenizer (the loading snippet loads it).
    """

    title: str
    summary: str
    method: str | None = None
    artifact: str | None = None
    repo_id: str | None = None
    base_model: str | None = None
    base_model_description: str | None = None
    library_name: str = "transformers"
    tags: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)
    evaluation: str | None = None
    versions: dict[str, str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tokenizer: bool = True


def loading_snippet(artifact: str, repo_id: str, base_model: str | None, tokenizer: bool = True) -> str:
    """Python that loads what was pushed (`base_model`: the base's Hub id; None puts a placeholder to replace)."""
    base = json.dumps(base_model or "path/to/the/base/model")
    repo = json.dumps(repo_id)
    if artifact == "adapter":
        lines = [
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f"base = AutoModelForCausalLM.from_pretrained({base})",
            f"model = PeftModel.from_pretrained(base, {repo})",
            f"tokenizer = AutoTokenizer.from_pretrained({repo})",
        ]
    elif artifact == "head":
        lines = [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            "from hf_unlearn.hub import load_head_delta",
            "",
            f"model = load_head_delta(AutoModelForCausalLM.from_pretrained({base}), {repo})",
            f"tokenizer = AutoTokenizer.from_pretrained({base})",
        ]
    elif artifact == "full":
        lines = [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f"model = AutoModelForCausalLM.from_pretrained({repo})",
            f"tokenizer = AutoTokenizer.from_pretrained({repo})",
        ]
    else:
        raise ValueError(f"artifact={artifact!r} is not one of {ARTIFACTS}.")
    if not tokenizer:  # e.g. the Markov benchmark's models read state ids
        lines = [line.replace(", AutoTokenizer", "") for line in lines if not line.startswith("tokenizer = ")]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(rows: dict[str, Any], header: tuple[str, str]) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    return lines + [f"| {_cell(key)} | {_cell(value)} |" for key, value in rows.items()]


def _metadata(info: ModelCardInfo, existing: ModelCardData | None) -> ModelCardData:
    """Our metadata over an existing card's (PEFT's): its keys kept, tags merged, a local-path `base_model` dropped
    (the Hub only accepts repository ids there)."""
    data = existing.to_dict() if existing is not None else {}
    recorded = data.get("base_model")
    base = info.base_model or hub_id_or_none(recorded if isinstance(recorded, str) else None)
    # PEFT tags `base_model:adapter:<base>`; with a local base that tag is as invalid as the path.
    tags = [
        tag
        for tag in data.get("tags") or []
        if not str(tag).startswith("base_model:") or (base is not None and str(tag).endswith(f":{base}"))
    ]
    method_tags = [info.method.lower()] if info.method else []
    extra = ["hf-unlearn", *(["unlearning"] if info.method else []), *method_tags, *info.tags]
    if info.artifact == "adapter":
        extra += ["lora", *([f"base_model:adapter:{base}"] if base else [])]  # PEFT's tags
    elif info.artifact == "head":
        extra.append("head-delta")
    for tag in extra:
        if tag not in tags:
            tags.append(tag)
    data.update(library_name=info.library_name, tags=tags, pipeline_tag="text-generation")
    data.pop("base_model", None)
    if base is not None:
        data["base_model"] = base
    datasets = list(dict.fromkeys([*(data.get("datasets") or []), *info.datasets]))
    if datasets:
        data["datasets"] = datasets
    return ModelCardData(**data)


def build_model_card(info: ModelCardInfo, existing: ModelCard | None = None) -> ModelCard:
    """A `ModelCard` from `info`; an `existing` card (e.g. the one PEFT writes) keeps its metadata, merged with ours,
    while its body is replaced (PEFT's is a template of placeholders)."""
    data = _metadata(info, existing.data if existing is not None else None)
    lines = [f"# {info.title}", "", info.summary, ""]
    if info.method:
        reference = _method_reference(info.method)
        lines += ["## Method", "", f"**{info.method}**" + (f": {reference}" if reference else ""), ""]
        lines += ["Made with hf-unlearn (Hugging Face-native machine unlearning).", ""]
    if info.artifact:
        lines += [f"Contents: {_ARTIFACT_TEXT[info.artifact]}."]
    if info.base_model:
        described = f" ({info.base_model_description})" if info.base_model_description else ""
        lines.append(f"Base model: [{info.base_model}](https://huggingface.co/{info.base_model}){described}.")
    elif info.base_model_description:
        lines.append(f"Base model: {info.base_model_description}.")
    lines.append("")
    if info.hyperparameters:
        lines += ["## Hyperparameters", "", *_table(info.hyperparameters, ("setting", "value")), ""]
    if info.data:
        lines += [
            "## Data",
            "",
            "Selections by name and row count; no training text is included in this repository.",
            "",
        ]
        lines += [*_table(info.data, ("set", "selection (rows)")), ""]
    if info.evaluation:
        lines += ["## Evaluation", "", info.evaluation.strip(), ""]
    if info.notes:
        lines += ["## Run", "", *(f"- {note}" for note in info.notes), ""]
    if info.artifact and info.repo_id:
        snippet = loading_snippet(info.artifact, info.repo_id, info.base_model, info.tokenizer)
        lines += ["## How to load", "", "```python", snippet, "```", ""]
        if info.base_model is None:
            lines += ["Replace `path/to/the/base/model` with the base model described above.", ""]
    if info.versions:
        versions = {name: version or "not installed" for name, version in info.versions.items()}
        lines += ["## Library versions", "", *_table(versions, ("library", "version")), ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def _method_reference(method: str) -> str:
    """The first sentence of the method's trainer docstring (its paper), or ''."""
    try:
        from ..trainers import METHODS
    except ImportError:  # pragma: no cover
        return ""
    trainer = METHODS.get(method, (None, None))[1]
    doc = " ".join((trainer.__doc__ or "").split("\n\n")[0].split()) if trainer is not None else ""
    return doc


def write_model_card(
    folder: str | os.PathLike, info: ModelCardInfo, existing: str | os.PathLike | None = None
) -> ModelCard:
    """Write `folder/README.md`, keeping the metadata of the card already there (or of the card at `existing`)."""
    folder = Path(folder)
    source = Path(existing) if existing is not None else folder / "README.md"
    card = build_model_card(info, ModelCard.load(source) if source.is_file() else None)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(str(card), encoding="utf-8")
    return card
