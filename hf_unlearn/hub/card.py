"""Model cards, made with `huggingface_hub.ModelCard.from_template` from our template and a `ModelCardData`: YAML
metadata (merged with an existing card's, PEFT's), the license of the base model when its card is known locally, a
`model-index` of the unlearning metrics (`EvalResult`), the method and its hyperparameters, data by name and row
count, the evaluation summary, versions, and how to load the result. Settings and numbers only: a card never receives
training text.

This module knows nothing of the trainers: the method's reference (`method_reference(trainer_class)`) and everything
else come in as arguments."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .artifacts import ARTIFACTS, HEAD_DELTA_FILE
from .push import hub_id_or_none

__all__ = [
    "LIBRARY_NAMES",
    "ModelCardInfo",
    "adapter_settings",
    "base_license",
    "build_model_card",
    "config_hyperparameters",
    "default_versions",
    "gguf_file_of",
    "loading_snippet",
    "method_reference",
    "unlearning_eval_results",
    "write_model_card",
]

_ARTIFACT_TEXT = {
    "adapter": "the PEFT adapter only (apply it to the base model)",
    "head": f"the unlearned LM head only (`{HEAD_DELTA_FILE}`; every other weight is the base model's)",
    "full": "the full model",
}
# The card's `library_name` says what loads the folder: PEFT an adapter, transformers a full model. A head delta is
# neither a PEFT adapter nor a checkpoint `from_pretrained` can read (no config, only the head's tensors): it loads
# with `hf_unlearn.hub.load_head_delta`, so it says hf-unlearn (the Hub then offers no wrong snippet).
LIBRARY_NAMES = {"adapter": "peft", "head": "hf-unlearn", "full": "transformers", None: "transformers"}


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


def method_reference(trainer_class: type | None) -> str:
    """The first paragraph of a trainer class's docstring (the method and its paper), or ''."""
    doc = (trainer_class.__doc__ or "") if trainer_class is not None else ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _local_folder(name_or_path: str | os.PathLike | None) -> Path | None:
    """A model's folder on this machine: the folder itself, or the cached snapshot of a Hub id (no network)."""
    if not name_or_path:
        return None
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if hub_id_or_none(str(name_or_path)) is None:
        return None
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name_or_path), local_files_only=True))
    except Exception:  # not cached (or a broken cache entry): nothing known locally
        return None


def base_license(*names_or_paths: str | os.PathLike | None) -> dict[str, str]:
    """`license` (and `license_name` / `license_link` for `license: other`) of the first of these models whose card
    is on this machine (a folder's README.md, or a Hub id's cached card); {} when none is known. No network."""
    for name in names_or_paths:
        if not name:
            continue
        card_path = None
        folder = Path(name).expanduser()
        if folder.is_dir():
            card_path = folder / "README.md"
        elif hub_id_or_none(str(name)) is not None:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(name), "README.md")
            card_path = Path(cached) if isinstance(cached, str) else None
        if card_path is None or not card_path.is_file():
            continue
        try:
            data = ModelCard(card_path.read_text(encoding="utf-8"), ignore_metadata_errors=True).data.to_dict()
        except Exception:  # a card whose metadata does not parse says nothing about the license
            continue
        found = {key: str(data[key]) for key in ("license", "license_name", "license_link") if data.get(key)}
        if "license" in found:
            return found
    return {}


def gguf_file_of(name_or_path: str | os.PathLike | None) -> str | None:
    """The GGUF file a model was loaded from, when its folder (or cached Hub snapshot) holds no `config.json` and
    exactly one `.gguf` file; else None. Such a base needs `gguf_file=` to load (PEFT's `AutoPeftModel` cannot)."""
    folder = _local_folder(name_or_path)
    if folder is None or (folder / "config.json").is_file():
        return None
    ggufs = sorted(path.name for path in folder.glob("*.gguf"))
    return ggufs[0] if len(ggufs) == 1 else None


def unlearning_eval_results(
    metrics: dict[str, Any],
    *,
    dataset_type: str,
    dataset_name: str,
    dataset_config: str | None = None,
    dataset_split: str | None = None,
) -> list[EvalResult]:
    """The `model-index` entries of an unlearning evaluation: one `EvalResult` per finite numeric metric, in order."""
    results = []
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        results.append(
            EvalResult(
                task_type="text-generation",
                task_name="Machine unlearning",
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_config=dataset_config,
                dataset_split=dataset_split,
                metric_type=name,
                metric_name=name,
                metric_value=float(value),
            )
        )
    return results


@dataclass
class ModelCardInfo:
    """What a model card says (settings and numbers only: never training text).

    Parameters:
        title: the card's heading (the repository name).
        summary: one paragraph saying what the model is.
        method: the unlearning method (`"NPO"`), None for a model that is not unlearned (a fine-tuned TOFU model).
        method_reference: the method in one sentence with its paper (`method_reference(NPOTrainer)`).
        artifact: what the folder holds (`ARTIFACTS`); decides `library_name` and how to load it.
        repo_id: where it is (or will be) on the Hub; None for a local card (the loading code names a folder).
        base_model: the Hub id of the model it was made from (metadata), or None.
        base_model_description: the base model in words when it is not on the Hub (a local path...).
        base_gguf_file: the GGUF file of the base model (within `base_model` or the described folder), if the base
            was one: the loading code passes it as `gguf_file=`.
        library_name: None: from the artifact (`LIBRARY_NAMES`: peft, hf-unlearn for a head delta, transformers).
        license, license_name, license_link: the base model's license (`base_license`); omitted when unknown.
        tags, datasets: extra metadata tags and Hub dataset ids.
        hyperparameters: `setting -> value` (`config_hyperparameters`, LoRA settings, ...).
        data: `role -> "selection (N rows)"` (`forget`, `retain`, ...).
        evaluation: a markdown table of the evaluation summary.
        eval_results: the metadata `model-index` (`unlearning_eval_results`).
        versions: `library -> version`.
        notes: extra lines (run time, steps, ...).
        tokenizer: whether the model has a tokenizer (the loading code loads it).
    """

    title: str
    summary: str
    method: str | None = None
    method_reference: str | None = None
    artifact: str | None = None
    repo_id: str | None = None
    base_model: str | None = None
    base_model_description: str | None = None
    base_gguf_file: str | None = None
    library_name: str | None = None
    license: str | None = None
    license_name: str | None = None
    license_link: str | None = None
    tags: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)
    evaluation: str | None = None
    eval_results: list[EvalResult] = field(default_factory=list)
    versions: dict[str, str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tokenizer: bool = True


_LOCAL_FOLDER = "path/to/this/folder"
_BASE_PLACEHOLDER = "path/to/the/base/model"


def loading_snippet(
    artifact: str,
    repo_id: str | None,
    base_model: str | None,
    tokenizer: bool = True,
    base_gguf_file: str | None = None,
) -> str:
    """Python that loads what was pushed (`repo_id` None: a local folder; `base_model` None: a placeholder to
    replace; `base_gguf_file`: the base is that GGUF file, loaded with `gguf_file=`)."""
    base = json.dumps(base_model or _BASE_PLACEHOLDER)
    repo = json.dumps(repo_id or _LOCAL_FOLDER)
    base_args = base + (f", gguf_file={json.dumps(base_gguf_file)}" if base_gguf_file else "")
    if artifact == "adapter":
        lines = [
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f"base = AutoModelForCausalLM.from_pretrained({base_args})",
            f"model = PeftModel.from_pretrained(base, {repo})",
            f"tokenizer = AutoTokenizer.from_pretrained({repo})",
        ]
    elif artifact == "head":
        lines = [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            "from hf_unlearn.hub import load_head_delta",
            "",
            f"model = load_head_delta(AutoModelForCausalLM.from_pretrained({base_args}), {repo})",
            f"tokenizer = AutoTokenizer.from_pretrained({base_args})",
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


def _load_line(info: ModelCardInfo) -> str:
    """One sentence: what loads this folder, and how."""
    where = json.dumps(info.repo_id or _LOCAL_FOLDER)
    if info.artifact == "adapter":
        line = f"Load it with PEFT: the base model, then `PeftModel.from_pretrained(base, {where})`."
        if info.base_gguf_file:
            line += (
                f" The base is the GGUF file `{info.base_gguf_file}`, which transformers loads only with "
                "`gguf_file=` (and the `gguf` package), so `AutoPeftModelForCausalLM.from_pretrained` cannot load "
                "this adapter on its own: load the base as below, or from a safetensors copy "
                "(`hf_unlearn.models.convert_gguf_to_safetensors`)."
            )
        return line
    if info.artifact == "head":
        return (
            f"This is neither a PEFT adapter nor a transformers checkpoint: `{HEAD_DELTA_FILE}` holds the new LM head "
            f"only. Load the base model, then apply it with `hf_unlearn.hub.load_head_delta(base, {where})` "
            "(`pip install hf-unlearn`), which refuses a base whose head differs from the one that was unlearned."
        )
    return f"Load it with transformers: `AutoModelForCausalLM.from_pretrained({where})`."


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(rows: dict[str, Any], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    return "\n".join(lines + [f"| {_cell(key)} | {_cell(value)} |" for key, value in rows.items()])


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
    library_name = info.library_name or LIBRARY_NAMES[info.artifact]
    data.update(library_name=library_name, tags=tags, pipeline_tag="text-generation")
    for key in ("license", "license_name", "license_link"):
        if getattr(info, key):
            data[key] = getattr(info, key)
    data.pop("base_model", None)
    if base is not None:
        data["base_model"] = base
    datasets = list(dict.fromkeys([*(data.get("datasets") or []), *info.datasets]))
    if datasets:
        data["datasets"] = datasets
    data.pop("model-index", None)  # an existing index is replaced by ours (or dropped: it described another model)
    data.pop("eval_results", None)
    if info.eval_results:
        data.update(model_name=info.title, eval_results=info.eval_results)
    return ModelCardData(**data)


# Our card's body, rendered by `ModelCard.from_template` (jinja2); every value is prepared by `build_model_card`.
CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ summary }}
{% if method %}
## Method

**{{ method }}**{% if method_reference %}: {{ method_reference }}{% endif %}

Made with hf-unlearn (Hugging Face-native machine unlearning).
{% endif %}
{% if contents %}Contents: {{ contents }}.
{% endif %}{% if base_line %}{{ base_line }}
{% endif %}{% if load_line %}
{{ load_line }}
{% endif %}{% if hyperparameters_table %}
## Hyperparameters

{{ hyperparameters_table }}
{% endif %}{% if data_table %}
## Data

Selections by name and row count; no training text is included in this repository.

{{ data_table }}
{% endif %}{% if evaluation %}
## Evaluation

{{ evaluation }}
{% endif %}{% if notes %}
## Run
{% for note in notes %}
- {{ note }}{% endfor %}
{% endif %}{% if snippet %}
## How to load

```python
{{ snippet }}
```
{% if placeholders %}
{{ placeholders }}
{% endif %}{% endif %}{% if versions_table %}
## Library versions

{{ versions_table }}
{% endif %}"""


def build_model_card(info: ModelCardInfo, existing: ModelCard | None = None) -> ModelCard:
    """A `ModelCard` from `info` (`ModelCard.from_template` with `CARD_TEMPLATE`); an `existing` card (e.g. the one
    PEFT writes) keeps its metadata, merged with ours, while its body is replaced (PEFT's is a template of
    placeholders)."""
    data = _metadata(info, existing.data if existing is not None else None)
    base_line = None
    if info.base_model:
        described = f" ({info.base_model_description})" if info.base_model_description else ""
        base_line = f"Base model: [{info.base_model}](https://huggingface.co/{info.base_model}){described}."
    elif info.base_model_description:
        base_line = f"Base model: {info.base_model_description}."
    snippet, placeholders = None, []
    if info.artifact:
        snippet = loading_snippet(info.artifact, info.repo_id, info.base_model, info.tokenizer, info.base_gguf_file)
        if info.repo_id is None:
            placeholders.append(f"`{_LOCAL_FOLDER}`: where this folder is")
        if info.base_model is None and info.artifact != "full":
            placeholders.append(f"`{_BASE_PLACEHOLDER}`: the base model described above")
    versions = {name: version or "not installed" for name, version in info.versions.items()}
    return ModelCard.from_template(
        data,
        template_str=CARD_TEMPLATE,
        title=info.title,
        summary=info.summary,
        method=info.method,
        method_reference=info.method_reference,
        contents=_ARTIFACT_TEXT[info.artifact] if info.artifact else None,
        base_line=base_line,
        load_line=_load_line(info) if info.artifact else None,
        hyperparameters_table=_table(info.hyperparameters, ("setting", "value")) if info.hyperparameters else None,
        data_table=_table(info.data, ("set", "selection (rows)")) if info.data else None,
        evaluation=info.evaluation.strip() if info.evaluation else None,
        notes=info.notes,
        snippet=snippet,
        placeholders=("Replace " + "; ".join(placeholders) + ".") if placeholders else None,
        versions_table=_table(versions, ("library", "version")) if versions else None,
    )


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
