"""The TOFU recipe: parsing and validation (every key, method and config before anything slow runs), model sources,
training-data selections, and the plan that `--dry-run` prints.

A TOFU recipe (`task: tofu`, see `recipes/tofu/*.yaml`) names two models, the *target* (TOFU's "full" model: it saw the
forget set) and the *retain* model (never saw it). Each is either given (`name_or_path`: a Hub id, a local folder,
`pkg:PACKAGE` for a model shipped inside an installed Python package) or fine-tuned from `models.base` on a list of
TOFU data selections (`train_data`) with the `finetune` settings (TRL `SFTConfig` fields).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, concatenate_datasets

from .. import __version__
from ..data.tofu import DEFAULT_DATE_STRING, DEFAULT_SYSTEM_PROMPT, load_tofu
from ..evaluation.results import sha256_json
from ..evaluation.tofu import tofu_split_configs
from ..models import resolve_model_path
from ..recipe import build_method_config, check_keys, method_specs
from ..trainers import METHODS
from ..utils import package_version

__all__ = ["ModelSpec", "TofuPlan", "build_lora_config", "build_sft_config", "describe_plan", "format_kwargs",
           "parse_tofu_recipe", "select_rows", "versions"]  # fmt: skip

RECIPE_KEYS = {"task", "output_dir", "models_dir", "seed", "data_dir", "forget_split", "formatting", "models",
               "finetune", "finetune_lora", "unlearn_data", "unlearn", "unlearn_lora", "methods", "evaluation",
               "report", "launch", "save_dtype"}  # fmt: skip
ROLES = ("target", "retain")
MODEL_KEYS = {"name_or_path", "gguf_file", "dtype", "trust_remote_code"}
SELECTION_KEYS = {"config", "rows"}
FORMATTING = {"system_prompt": DEFAULT_SYSTEM_PROMPT, "date_string": DEFAULT_DATE_STRING, "use_chat_template": None,
              "reference_attention_mask": False}  # fmt: skip
EVALUATION = {"batch_size": 16, "generation_batch_size": None, "max_new_tokens": 200, "max_items": None,
              "split_max_items": None, "es_reference_floor": True}  # fmt: skip
REPORT = {"samples": 5, "forget_samples": 0}
LAUNCH = {"num_processes": 1}
# Our SFT defaults where TRL's depend on the hardware or do not suit TOFU: TRL turns bf16 and gradient checkpointing
# on by default (bf16 fails on a CPU); set them in the recipe for GPU runs. Loss on answer + end-of-turn only.
SFT_DEFAULTS = {"completion_only_loss": True, "packing": False, "max_length": 512, "bf16": False,
                "gradient_checkpointing": False, "report_to": "none", "save_strategy": "no",
                "logging_steps": 10}  # fmt: skip


def versions() -> dict[str, str | None]:
    """Library versions that enter every stage fingerprint (an upgrade recomputes rather than silently reuses)."""
    return {"hf_unlearn": __version__, "torch": torch.__version__,
            **{package: package_version(package) for package in ("transformers", "trl", "peft")}}


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from. `identity()` is what enters fingerprints: for a local folder, also the names and
    sizes of its weight files and its config, so a replaced checkpoint is not mistaken for the old one."""

    name_or_path: str
    gguf_file: str | None = None
    dtype: str = "float32"  # fp32 master weights; bf16 compute comes from the trainer's autocast (`bf16: true`)
    trust_remote_code: bool = False
    adapter: str | None = None  # a PEFT adapter folder applied on top (unlearning with LoRA)

    @property
    def path(self) -> str:
        return resolve_model_path(self.name_or_path)

    def describe(self) -> str:
        text = self.name_or_path + (f" ({self.gguf_file})" if self.gguf_file else "")
        return text + (f" + adapter {self.adapter}" if self.adapter else "")

    def identity(self) -> dict[str, Any]:
        identity: dict[str, Any] = dataclasses.asdict(self)
        folder = Path(self.path)
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".gguf", ".json"))
            identity["files"] = {p.name: p.stat().st_size for p in files if p.name != "hf_unlearn_stage.json"}
            config = folder / "config.json"
            identity["config_sha256"] = sha256_json(config.read_text()) if config.is_file() else None
            stamp = folder / "hf_unlearn_stage.json"  # a model made by a stage: its whole lineage in one hash
            if stamp.is_file():
                identity["stage_sha256"] = json.loads(stamp.read_text()).get("fingerprint_sha256")
        return identity


def _model_spec(raw: Any, where: str, allow_train_data: bool) -> tuple[ModelSpec | None, list[dict] | None]:
    keys = MODEL_KEYS | ({"train_data"} if allow_train_data else set())
    raw = dict(check_keys(raw, keys, where))
    train_data = raw.pop("train_data", None)
    if train_data is not None:
        if raw:
            raise ValueError(f"{where}: give either `train_data` (fine-tune from models.base) or `name_or_path`, "
                             f"not both (also got {sorted(raw)}).")  # fmt: skip
        return None, _selections(train_data, f"{where}.train_data")
    if not raw.get("name_or_path"):
        raise ValueError(f"{where} needs `name_or_path` (Hub id, folder or pkg:PACKAGE)"
                         + (" or `train_data`." if allow_train_data else "."))  # fmt: skip
    if raw.get("dtype", "float32") not in ("float32", "bfloat16", "float16", "auto"):
        raise ValueError(f"{where}.dtype={raw['dtype']!r} is not one of float32, bfloat16, float16, auto.")
    return ModelSpec(**raw), None


def _selections(raw: Any, where: str) -> list[dict[str, Any]]:
    """`[{config: NAME, rows: [start, stop]}, ...]` (rows optional, Python slice semantics; a bare string is a whole
    config)."""
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{where} must be a non-empty list of TOFU selections, e.g. [{{config: forget05}}].")
    out = []
    for i, entry in enumerate(raw):
        entry = {"config": entry} if isinstance(entry, str) else dict(check_keys(entry, SELECTION_KEYS, f"{where}[{i}]"))
        if not isinstance(entry.get("config"), str):
            raise ValueError(f"{where}[{i}] needs `config` (a TOFU config name such as full or forget05).")
        rows = entry.get("rows")
        if rows is not None and not (isinstance(rows, list) and len(rows) == 2
                                     and all(r is None or (isinstance(r, int) and r >= 0) for r in rows)):  # fmt: skip
            raise ValueError(f"{where}[{i}].rows must be [start, stop] (non-negative integers or null), got {rows!r}.")
        out.append({"config": entry["config"], "rows": rows})
    return out


def describe_selections(selections: list[dict[str, Any]]) -> str:
    """`full[0:400] + forget05`: config names and row ranges only, never text."""
    def one(selection: dict[str, Any]) -> str:
        if selection["rows"] is None:
            return selection["config"]
        start, stop = selection["rows"]
        return f"{selection['config']}[{start or 0}:{'' if stop is None else stop}]"

    return " + ".join(one(s) for s in selections)


def select_rows(selections: list[dict[str, Any]], data_dir: str | os.PathLike | None) -> Dataset:
    """The question/answer rows of the selections, concatenated in order (other columns dropped)."""
    parts = []
    for s in selections:
        data = load_tofu(s["config"], data_dir)
        missing = [c for c in ("question", "answer") if c not in data.column_names]
        if missing:
            raise ValueError(f"TOFU config {s['config']!r} lacks column(s) {missing}.")
        start, stop = s["rows"] or (None, None)
        chosen = range(len(data))[slice(start, stop)]
        if s["rows"] is not None and (len(chosen) == 0 or (stop is not None and stop > len(data))):
            raise ValueError(f"Selection {describe_selections([s])}: {s['config']} has {len(data)} rows.")
        parts.append(data.select_columns(["question", "answer"]).select(chosen))
    return concatenate_datasets(parts)


def format_kwargs(formatting: dict[str, Any]) -> dict[str, Any]:
    """`tokenize_tofu` / `evaluate_tofu` keyword arguments from the recipe's `formatting` (SPEC §3 defaults)."""
    return {"system_prompt": formatting["system_prompt"], "template_kwargs": {"date_string": formatting["date_string"]},
            "use_chat_template": formatting["use_chat_template"],
            "reference_attention_mask": formatting["reference_attention_mask"]}  # fmt: skip


def build_sft_config(settings: dict[str, Any], output_dir: str | os.PathLike, check_only: bool = False):
    """TRL's `SFTConfig` from the recipe's `finetune` settings over `SFT_DEFAULTS`.

    `check_only` (dry runs, recipe validation) builds it on any machine: bf16/fp16 without a GPU get `use_cpu=True`,
    which only skips TrainingArguments' hardware check."""
    from trl import SFTConfig

    fields = {f.name for f in dataclasses.fields(SFTConfig) if f.init}
    settings = {**SFT_DEFAULTS, **check_keys(settings, fields, "finetune (SFTConfig fields)")}
    return SFTConfig(output_dir=str(output_dir), **_checkable(settings, check_only))


def build_lora_config(settings: dict[str, Any] | None, where: str):
    """`peft.LoraConfig(task_type="CAUSAL_LM", **settings)`, or None."""
    if not settings:
        return None
    from peft import LoraConfig

    fields = {f.name for f in dataclasses.fields(LoraConfig) if f.init}
    return LoraConfig(**{"task_type": "CAUSAL_LM", **check_keys(settings, fields, f"{where} (LoraConfig fields)")})


def _checkable(settings: dict[str, Any], check_only: bool) -> dict[str, Any]:
    half = settings.get("bf16") or settings.get("fp16")
    if check_only and half and not torch.cuda.is_available():
        return {**settings, "use_cpu": True}
    return settings


@dataclass
class TofuPlan:
    """A validated TOFU recipe with defaults filled in and paths resolved (CLI overrides applied)."""

    recipe: dict[str, Any]
    output_dir: Path
    models_dir: Path
    seed: int
    data_dir: str | None
    forget_split: str
    formatting: dict[str, Any]
    base: ModelSpec | None
    given: dict[str, ModelSpec]  # role -> given model
    train_data: dict[str, list[dict[str, Any]]]  # role -> selections (fine-tuned models)
    finetune: dict[str, Any]
    finetune_lora: dict[str, Any] | None
    unlearn_data: dict[str, list[dict[str, Any]]]
    unlearn: dict[str, Any]
    unlearn_lora: dict[str, Any] | None
    specs: dict[str, dict[str, Any]]
    evaluation: dict[str, Any]
    report: dict[str, Any]
    launch: dict[str, Any] = field(default_factory=lambda: dict(LAUNCH))
    save_dtype: str | None = None  # unlearned models are saved in this dtype (None: as trained, fp32)

    @property
    def configs(self) -> dict[str, str]:
        return tofu_split_configs(self.forget_split)

    def settings(self) -> dict[str, Any]:
        """Everything that shapes the results, for `results.json` (no text)."""
        return {"forget_split": self.forget_split, "data_dir": self.data_dir, "formatting": self.formatting,
                "models": {**{r: m.describe() for r, m in self.given.items()},
                           **{r: f"fine-tuned from {self.base.describe()} on {describe_selections(s)}"
                              for r, s in self.train_data.items()}},
                "finetune": self.finetune if self.train_data else None, "finetune_lora": self.finetune_lora,
                "unlearn_data": {k: describe_selections(v) for k, v in self.unlearn_data.items()},
                "unlearn": self.unlearn, "unlearn_lora": self.unlearn_lora, "methods": self.specs,
                "evaluation": self.evaluation, "report": self.report, "save_dtype": self.save_dtype}  # fmt: skip


def parse_tofu_recipe(recipe: dict[str, Any], *, output_dir: str | os.PathLike | None = None,
                      models_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
                      require_methods: bool = True, dry_run: bool = False) -> TofuPlan:  # fmt: skip
    """Validate a TOFU recipe completely (keys, model sources, selections, SFT / LoRA / method configs) and fill in
    defaults. Raises ValueError naming the bad key or value.

    For a real run the configs are built as they will be used, so a setting this machine cannot honour (bf16 without
    a GPU) fails now, not after hours of fine-tuning; `dry_run=True` validates for any machine."""
    check_keys(recipe, RECIPE_KEYS, "the TOFU recipe")
    forget_split = recipe.get("forget_split", "forget05")
    configs = tofu_split_configs(forget_split)
    seed = int(recipe.get("seed", 42))
    out = Path(output_dir or recipe.get("output_dir") or f"outputs/tofu/{forget_split}")
    data = data_dir if data_dir is not None else recipe.get("data_dir")
    formatting = {**FORMATTING, **check_keys(recipe.get("formatting"), FORMATTING, "formatting")}

    models = check_keys(recipe.get("models"), {"base", *ROLES}, "models")
    given, train_data = {}, {}
    for role in ROLES:
        if role not in models:
            raise ValueError(f"models.{role} is missing: give name_or_path, or train_data to fine-tune it.")
        spec, selections = _model_spec(models[role], f"models.{role}", allow_train_data=True)
        if spec is not None:
            given[role] = spec
        else:
            train_data[role] = selections
    base = _model_spec(models["base"], "models.base", allow_train_data=False)[0] if models.get("base") else None
    if train_data and base is None:
        raise ValueError(f"models.{next(iter(train_data))} has train_data but the recipe has no models.base to fine-tune.")
    finetune = {"seed": seed, **(recipe.get("finetune") or {})}
    finetune_lora = recipe.get("finetune_lora")
    if train_data:
        build_sft_config(finetune, out / "_check", check_only=dry_run)
        build_lora_config(finetune_lora, "finetune_lora")
    elif recipe.get("finetune") or finetune_lora:
        raise ValueError("The recipe has `finetune` settings but no model with train_data to fine-tune.")

    unlearn_data = check_keys(recipe.get("unlearn_data"), {"forget", "retain"}, "unlearn_data")
    unlearn_data = {"forget": _selections(unlearn_data.get("forget", forget_split), "unlearn_data.forget"),
                    "retain": _selections(unlearn_data.get("retain", f"retain{100 - int(forget_split[6:]):02d}"),
                                          "unlearn_data.retain")}  # fmt: skip
    specs = method_specs(recipe.get("methods")) if require_methods or recipe.get("methods") else {}
    shared = {"seed": seed, **(recipe.get("unlearn") or {})}
    unlearn_lora = recipe.get("unlearn_lora")
    build_lora_config(unlearn_lora, "unlearn_lora")
    for spec in specs.values():  # fail on a bad method setting before hours of fine-tuning, not after
        # (`hf-unlearn finetune` does not use them here: valid for any machine is enough)
        _build_checked(spec, shared, out / "_check", check_only=dry_run or not require_methods)

    evaluation = {**EVALUATION, **check_keys(recipe.get("evaluation"), EVALUATION, "evaluation")}
    split_max = check_keys(evaluation["split_max_items"], set(configs), "evaluation.split_max_items")
    if any(not isinstance(n, int) or n < 1 for n in split_max.values()):
        raise ValueError(f"evaluation.split_max_items values must be integers >= 1, got {split_max}.")
    report = {**REPORT, **check_keys(recipe.get("report"), REPORT, "report")}
    for key, value in report.items():
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"report.{key} must be an integer >= 0, got {value!r}.")
    launch = {**LAUNCH, **check_keys(recipe.get("launch"), LAUNCH, "launch")}
    save_dtype = recipe.get("save_dtype")
    if save_dtype not in (None, "float32", "bfloat16", "float16"):
        raise ValueError(f"save_dtype={save_dtype!r} is not one of null, float32, bfloat16, float16.")
    return TofuPlan(recipe=recipe, output_dir=out, models_dir=Path(models_dir or recipe.get("models_dir") or out / "models"),
                    seed=seed, data_dir=None if data is None else str(data), forget_split=forget_split,
                    formatting=formatting, base=base, given=given, train_data=train_data, finetune=finetune,
                    finetune_lora=finetune_lora, unlearn_data=unlearn_data, unlearn=shared, unlearn_lora=unlearn_lora,
                    specs=specs, evaluation=evaluation, report=report, launch=launch,
                    save_dtype=save_dtype)  # fmt: skip


def _build_checked(spec: dict[str, Any], shared: dict[str, Any], output_dir: Path, check_only: bool = True):
    settings = _checkable({**shared, **{k: v for k, v in spec.items() if k != "method"}}, check_only)
    return build_method_config({"method": spec["method"], **settings}, {}, output_dir)


# ------------------------------------------------------------------------------------------------ dry run


def describe_plan(plan: TofuPlan, command: str, recipe_arg: str) -> str:
    """What `run` / `finetune` would do, every config built (no weights loaded, no data downloaded)."""
    processes = plan.launch["num_processes"]
    lines = [f"TOFU {plan.forget_split} ({'locuslab/TOFU from the Hub' if plan.data_dir is None else plan.data_dir}); "
             f"outputs in {plan.output_dir}, fine-tuned models in {plan.models_dir}.", "", "Models:"]  # fmt: skip
    for role in ROLES:
        if role in plan.given:
            lines.append(f"  {role}: given, {plan.given[role].describe()} (loaded as {plan.given[role].dtype})")
        else:
            lines.append(f"  {role}: fine-tuned from {plan.base.describe()} on {describe_selections(plan.train_data[role])}")
    if plan.train_data:
        sft = build_sft_config(plan.finetune, plan.models_dir / "_plan", check_only=True)
        lines.append("  fine-tuning: trl.SFTTrainer, " + _train_summary(sft, processes)
                     + f", completion_only_loss={sft.completion_only_loss}, max_length={sft.max_length}"
                     + (f", LoRA {plan.finetune_lora}" if plan.finetune_lora else ", full fine-tuning"))  # fmt: skip
    if command == "run":
        lines += ["", f"Unlearning: forget = {describe_selections(plan.unlearn_data['forget'])}, retain = "
                      f"{describe_selections(plan.unlearn_data['retain'])}"
                      + (f", LoRA {plan.unlearn_lora}" if plan.unlearn_lora else ", full model")
                      + (f", saved as {plan.save_dtype}" if plan.save_dtype else "")]  # fmt: skip
        for label, spec in plan.specs.items():
            config = _build_checked(spec, plan.unlearn, plan.output_dir / "_plan")
            extra = {k: v for k, v in spec.items() if k != "method"}
            lines.append(f"  {label}: {METHODS[spec['method']][1].__name__}({type(config).__name__}), "
                         f"{_train_summary(config, processes)}, retain_loss={config.retain_loss}"
                         + (f", {extra}" if extra else ""))  # fmt: skip
        ev = plan.evaluation
        subsets = ", ".join(f"{k} first {v}" for k, v in (ev["split_max_items"] or {}).items()) or "all items"
        lines += ["", f"Evaluation (target, retain, every method): {subsets}"
                      + (f" (others first {ev['max_items']})" if ev["max_items"] else "")
                      + f"; max_new_tokens {ev['max_new_tokens']}, batch {ev['batch_size']}"]  # fmt: skip
    lines += ["", "Launch:", f"  accelerate launch --num_processes {processes} -m hf_unlearn.cli {command} {recipe_arg}"]
    if processes > 1:  # `accelerate launch` starts one process on a machine without GPUs
        lines.append(f"  on CPUs: torchrun --nproc_per_node {processes} -m hf_unlearn.cli {command} {recipe_arg}")
    return "\n".join(lines)


def _train_summary(config, processes: int) -> str:
    per_device, accumulation = config.per_device_train_batch_size, config.gradient_accumulation_steps
    precision = "bf16 autocast, fp32 weights" if config.bf16 else ("fp16 autocast" if config.fp16 else "fp32")
    optim, schedule = (getattr(value, "value", value) for value in (config.optim, config.lr_scheduler_type))
    return (f"lr {config.learning_rate:g}, {config.num_train_epochs:g} epochs, batch {per_device} x {accumulation} "
            f"accumulation x {processes} process(es) = {per_device * accumulation * processes}, {precision}, "
            f"optim {optim}, warmup {config.warmup_steps:g}, weight decay {config.weight_decay:g}, "
            f"{schedule} schedule")  # fmt: skip
