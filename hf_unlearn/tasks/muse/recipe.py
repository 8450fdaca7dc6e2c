"""The MUSE recipe as typed data (`task: muse`, see `recipes/muse/*.yaml`).

Two models: the *target* (it saw the forget articles; MUSE's `muse-bench/MUSE-News_target`) and the *retain* model
(the retrained one, never saw them; its Min-K AUC is the PrivLeak reference). Each is given (`name_or_path`) or
fine-tuned from `models.base` on raw-text selections (`train_data`) with the `finetune` settings
(`TrainingArguments` fields), the documents cut into `max_length`-token chunks. Then every method unlearns the target
on `unlearn_data` (or, with `protocol: scalability`, on each `scal/forget_k` from the target; with
`protocol: sustainability`, on `sust/forget_1`, `sust/forget_2`, ... one after the other), and every model is
evaluated with the MUSE metrics (`hf_unlearn.evaluation.muse`) and, with an `lm_eval` section, lm-eval tasks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ...evaluation.lm_eval import LmEvalArguments
from ...evaluation.muse import MuseEvalArguments
from ...recipe import LaunchArguments, RecipeError, build_method_config, check_keys, from_mapping, method_specs
from ...runtime.hashing import model_identity
from .data import FOLD_SPLITS, HUB_IDS, TextSelection, describe_text_selections

__all__ = ["MuseModel", "MuseRecipe", "describe_muse_recipe", "parse_muse_recipe", "training_arguments"]

ROLES = ("target", "retain")
# Our fine-tuning defaults where TrainingArguments' do not suit a CPU or a recipe run.
FINETUNE_DEFAULTS = {"report_to": "none", "save_strategy": "no", "bf16": False, "logging_steps": 10}


@dataclass
class MuseModel:
    """One model: given (`name_or_path`) or fine-tuned from `models.base` on `train_data`."""

    name_or_path: str | None = field(default=None, metadata={"help": "Hub id or local folder."})
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    train_data: list[TextSelection] | None = field(default=None, metadata={"help": "Fine-tune on these documents."})

    def __post_init__(self) -> None:
        if (self.train_data is None) == (self.name_or_path is None):
            raise ValueError("give either name_or_path or train_data (fine-tuned from models.base).")
        if self.train_data is not None and not self.train_data:
            raise ValueError("train_data must list at least one selection, e.g. [{split: raw/forget}].")

    def identity(self) -> dict[str, Any]:
        return model_identity(self.name_or_path, dtype=self.dtype)


@dataclass
class MuseModels:
    base: MuseModel | None = None
    target: MuseModel | None = None
    retain: MuseModel | None = None


@dataclass
class MuseRecipe:
    """A MUSE recipe, typed; `parse_muse_recipe` checks it completely and fills it in."""

    task: Literal["muse"] = "muse"
    corpus: Literal["news", "books", "custom"] = field(
        default="news", metadata={"help": "news, books, or custom (local text files only, no MUSE metrics)."}
    )
    output_dir: Path | None = field(default=None, metadata={"help": "Default: outputs/muse/<corpus>."})
    models_dir: Path | None = field(default=None, metadata={"help": "Fine-tuned models; default: OUTPUT/models."})
    data_dir: str | None = field(default=None, metadata={"help": "A local folder in MUSE's layout (default: Hub)."})
    seed: int = 42
    max_length: int = field(default=2048, metadata={"help": "Tokens per training chunk (fine-tuning, unlearning)."})
    models: MuseModels = field(default_factory=MuseModels)
    finetune: dict[str, Any] = field(default_factory=dict, metadata={"help": "TrainingArguments fields."})
    unlearn_data: dict[str, list[TextSelection]] = field(
        default_factory=dict, metadata={"help": "forget (default raw/forget), retain (default raw/retain1)."}
    )
    unlearn: dict[str, Any] = field(default_factory=dict, metadata={"help": "Settings shared by every method."})
    methods: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={"help": "label -> {method, ...}."})
    protocol: Literal["standard", "scalability", "sustainability"] = field(
        default="standard", metadata={"help": "standard: unlearn_data.forget; scal/sust: the forget_k folds."}
    )
    folds: list[int] = field(default_factory=lambda: [1, 2, 3, 4], metadata={"help": "Folds k of scal/sust."})
    evaluation: MuseEvalArguments = field(default_factory=MuseEvalArguments)
    lm_eval: LmEvalArguments | None = None
    launch: LaunchArguments = field(default_factory=LaunchArguments)
    hub: dict[str, Any] = field(default_factory=dict, init=False, repr=False)  # no pushes from MUSE recipes yet

    @property
    def output_path(self) -> Path:
        return self.output_dir

    @property
    def models_path(self) -> Path:
        return self.models_dir

    @property
    def dtype(self) -> str:
        """How the target, the retain model and every unlearned model are loaded (the target's `dtype`)."""
        return self.models.target.dtype

    @property
    def roles(self) -> tuple[str, ...]:
        """The models of the run: the target, and the retain model when the recipe has one."""
        return tuple(role for role in ROLES if getattr(self.models, role) is not None)

    @property
    def train_data(self) -> dict[str, list[TextSelection]]:
        sources = {role: getattr(self.models, role) for role in self.roles}
        return {role: s.train_data for role, s in sources.items() if s.train_data is not None}

    def settings(self) -> dict[str, Any]:
        """Everything that shapes the results, for `results.json` (no text)."""
        models = {}
        for role in self.roles:
            source = getattr(self.models, role)
            models[role] = source.name_or_path or (
                f"fine-tuned from {self.models.base.name_or_path} on {describe_text_selections(source.train_data)}"
            )
        return {
            "corpus": self.corpus,
            "data": self.data_dir or HUB_IDS.get(self.corpus),
            "max_length": self.max_length,
            "models": models,
            "finetune": self.finetune if self.train_data else None,
            "unlearn_data": {k: describe_text_selections(v) for k, v in self.unlearn_data.items()},
            "unlearn": self.unlearn,
            "methods": self.methods,
            "protocol": self.protocol,
            "folds": self.folds if self.protocol != "standard" else None,
            "evaluation": self.evaluation.settings(),
            "lm_eval": None if self.lm_eval is None else self.lm_eval.settings(),
        }


def training_arguments(settings: dict[str, Any], output_dir: str | os.PathLike, check_only: bool = False):
    """`TrainingArguments` of the fine-tuning from the recipe's `finetune` over `FINETUNE_DEFAULTS`."""
    from transformers import TrainingArguments

    values = {**FINETUNE_DEFAULTS, **settings}
    if check_only and (values.get("bf16") or values.get("fp16")):
        import torch

        if not torch.cuda.is_available():
            values["use_cpu"] = True  # only skips the hardware check of a dry run
    return from_mapping(TrainingArguments, values, "finetune (TrainingArguments fields)", output_dir=str(output_dir))


def _check_method(spec: dict[str, Any], shared: dict[str, Any], output_dir: Path, check_only: bool, where: str):
    settings = {**shared, **{k: v for k, v in spec.items() if k != "method"}}
    if check_only and (settings.get("bf16") or settings.get("fp16")):
        import torch

        if not torch.cuda.is_available():
            settings["use_cpu"] = True
    return build_method_config({"method": spec["method"], **settings}, {}, output_dir, where=where)


def parse_muse_recipe(
    raw: dict[str, Any],
    *,
    output_dir: str | os.PathLike | None = None,
    models_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    dry_run: bool = False,
) -> MuseRecipe:
    """Check a MUSE recipe completely (keys, types, models, selections, fine-tuning and method configs) and fill it
    in; raises a RecipeError naming the bad key or value."""
    if isinstance(raw, dict):
        check_keys(raw.get("unlearn_data") or {}, {"forget", "retain"}, "unlearn_data")
    recipe: MuseRecipe = from_mapping(MuseRecipe, raw, "the MUSE recipe", root=True)
    out = Path(output_dir or recipe.output_dir or f"outputs/muse/{recipe.corpus}")
    recipe.output_dir = out
    recipe.models_dir = Path(models_dir or recipe.models_dir or out / "models")
    if data_dir is not None:
        recipe.data_dir = str(data_dir)
    if recipe.max_length < 2:
        raise RecipeError(f"max_length must be >= 2, got {recipe.max_length}.")
    if recipe.models.target is None:
        raise RecipeError("models.target is missing: give name_or_path, or train_data to fine-tune it.")
    if recipe.models.retain is None and "privleak" in recipe.evaluation.metrics:
        raise RecipeError("models.retain is missing: PrivLeak is measured against the retrained (retain) model.")
    if recipe.corpus == "custom":
        selections = [s for role in recipe.roles for s in getattr(recipe.models, role).train_data or []]
        selections += [s for v in recipe.unlearn_data.values() for s in v]
        if recipe.evaluation.metrics or any(s.file is None for s in selections) or recipe.protocol != "standard":
            raise RecipeError(
                "corpus: custom takes local text files only (every selection a `file`), the standard protocol and "
                "no MUSE metrics (evaluation.metrics: []; evaluate with an lm_eval section)."
            )
        if set(recipe.unlearn_data) != {"forget", "retain"}:
            raise RecipeError("corpus: custom needs unlearn_data.forget and unlearn_data.retain (files).")
    if recipe.train_data:
        if recipe.models.base is None or recipe.models.base.name_or_path is None:
            raise RecipeError("models.target/retain have train_data but models.base (name_or_path) is missing.")
        retain_splits = {s.split for s in recipe.train_data.get("retain", [])}
        if retain_splits & {"raw/forget", "privleak/forget", *FOLD_SPLITS}:
            raise RecipeError("models.retain.train_data must not contain forget documents (it is the retrained model).")
        recipe.finetune = {"seed": recipe.seed, **recipe.finetune}
        training_arguments(recipe.finetune, out / "_check", check_only=True)
    elif recipe.finetune:
        raise RecipeError("The recipe has `finetune` settings but no model with train_data to fine-tune.")
    if recipe.protocol != "standard":
        if recipe.corpus != "news":
            raise RecipeError(f"protocol {recipe.protocol!r}: MUSE has its scal/sust folds for news only.")
        if not recipe.folds or any(k not in (1, 2, 3, 4) for k in recipe.folds):
            raise RecipeError(f"folds must be a non-empty list of 1..4, got {recipe.folds}.")
        if "forget" in recipe.unlearn_data:
            raise RecipeError(f"protocol {recipe.protocol!r} unlearns the forget_k folds: drop unlearn_data.forget.")
    recipe.unlearn_data = {
        "forget": recipe.unlearn_data.get("forget") or [TextSelection("raw/forget")],
        "retain": recipe.unlearn_data.get("retain") or [TextSelection("raw/retain1")],
    }
    recipe.methods = method_specs(recipe.methods)
    recipe.unlearn = {"seed": recipe.seed, **recipe.unlearn}
    for label, spec in recipe.methods.items():  # a bad method setting fails now, not after the fine-tuning
        if spec.get("push_to_hub") or recipe.unlearn.get("push_to_hub"):
            raise RecipeError(f"methods.{label}: push_to_hub is not supported by MUSE recipes yet.")
        _check_method(spec, recipe.unlearn, out / "_check", dry_run, f"methods.{label}")
    return recipe


def describe_muse_recipe(recipe: MuseRecipe, recipe_arg: str) -> str:
    """What `run` would do, every config built (nothing loaded or downloaded)."""
    from ...trainers import METHODS

    lines = [
        (
            "Raw-text unlearning (local files)"
            if recipe.corpus == "custom"
            else f"MUSE-{recipe.corpus.capitalize()} ({recipe.data_dir or HUB_IDS[recipe.corpus] + ' from the Hub'})"
        )
        + "; "
        f"outputs in {recipe.output_dir}, fine-tuned models in {recipe.models_dir}.",
        "",
        "Models:",
    ]
    for role in recipe.roles:
        source = getattr(recipe.models, role)
        if source.name_or_path is not None:
            lines.append(f"  {role}: given, {source.name_or_path} ({source.dtype})")
        else:
            args = training_arguments(recipe.finetune, recipe.models_dir / "_plan", check_only=True)
            lines.append(
                f"  {role}: fine-tuned from {recipe.models.base.name_or_path} on "
                f"{describe_text_selections(source.train_data)} ({recipe.max_length}-token chunks; lr "
                f"{args.learning_rate:g}, {args.num_train_epochs:g} epochs, batch {args.per_device_train_batch_size})"
            )
    if recipe.protocol == "standard":
        forget = describe_text_selections(recipe.unlearn_data["forget"])
    else:
        step = "each from the target" if recipe.protocol == "scalability" else "one after the other"
        forget = f"{recipe.protocol}: " + ", ".join(f"{recipe.protocol[:4]}/forget_{k}" for k in recipe.folds)
        forget += f" ({step})"
    lines += [
        "",
        f"Unlearning: forget = {forget}, retain = {describe_text_selections(recipe.unlearn_data['retain'])}, "
        f"{recipe.max_length}-token chunks",
    ]
    for label, spec in recipe.methods.items():
        config = _check_method(spec, recipe.unlearn, recipe.output_dir / "_plan", True, f"methods.{label}")
        extra = {k: v for k, v in spec.items() if k != "method"}
        lines.append(
            f"  {label}: {METHODS[spec['method']][1].__name__}, lr {config.learning_rate:g}, "
            + (f"{config.max_steps} steps" if config.max_steps > 0 else f"{config.num_train_epochs:g} epochs")
            + f", batch {config.per_device_train_batch_size} x "
            f"{config.gradient_accumulation_steps}, retain_loss={config.retain_loss}" + (f", {extra}" if extra else "")
        )
    ev = recipe.evaluation
    lines += [
        "",
        f"Evaluation ({', '.join(reversed(recipe.roles))}, every unlearned model): "
        + (
            f"{', '.join(ev.metrics)}; VerbMem {ev.verbmem_max_new_tokens} tokens, KnowMem "
            f"{ev.knowmem_max_new_tokens} tokens, Min-{ev.min_k:.0%} AUC"
            if ev.metrics
            else "no MUSE metrics"
        ),
    ]
    if recipe.lm_eval is not None:
        lines.append(f"lm-eval: {', '.join(recipe.lm_eval.tasks)} ({recipe.lm_eval.describe()})")
    lines += ["", f"Launch: hf-unlearn run {recipe_arg}"]
    return "\n".join(lines)
