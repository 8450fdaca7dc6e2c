"""The TOFU recipe as typed data: sections, model sources, training-data selections, and the plan `--dry-run` prints.

A TOFU recipe (`task: tofu`, see `recipes/tofu/*.yaml`) names two models, the *target* (TOFU's "full" model: it saw the
forget set) and the *retain* model (never saw it). Each is either given (`name_or_path`: a Hub id, a local folder,
`pkg:PACKAGE` for a model shipped inside an installed Python package) or fine-tuned from `models.base` on a list of
TOFU data selections (`train_data`) with the `finetune` settings (TRL `SFTConfig` fields). Every section is checked
(keys, types, and the SFT / LoRA / method configs built) before anything loads or trains.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..._compat import checkpointing_settings
from ...attacks.suite import AttackArguments, unsupported_attacks
from ...callbacks import MetricCondition
from ...data.tofu import TofuFormat
from ...evaluation.tofu import TofuEvalArguments, tofu_split_configs
from ...hub import HubPush, describe_pushes, plan_hub_pushes
from ...models import resolve_model_path
from ...recipe import LaunchArguments, RecipeError, build_method_config, from_mapping, method_specs
from ...runtime.hashing import model_identity
from ...trainers.gradient_restriction_config import GradientRestriction
from .data import Selection, describe_selections

__all__ = [
    "ROLES",
    "ModelSource",
    "ModelSpec",
    "TofuPlan",
    "TofuRecipe",
    "TrajectoryArguments",
    "build_lora_config",
    "build_sft_config",
    "describe_plan",
    "parse_tofu_recipe",
]

ROLES = ("target", "retain")
# Our SFT defaults where TRL's depend on the hardware or do not suit TOFU: TRL turns bf16 and gradient checkpointing
# on by default (bf16 fails on a CPU); set them in the recipe for GPU runs. Loss on answer + end-of-turn only.
SFT_DEFAULTS = {
    "completion_only_loss": True,
    "packing": False,
    "max_length": 512,
    "bf16": False,
    "report_to": "none",
    "save_strategy": "no",
    "logging_steps": 10,
}
DTYPES = Literal["float32", "bfloat16", "float16", "auto"]


@dataclass
class ModelSource:
    """One model of the recipe: given (`name_or_path`, optionally a GGUF file inside it) or fine-tuned from
    `models.base` on `train_data` (`parse_tofu_recipe` checks that it is one or the other)."""

    name_or_path: str | None = field(default=None, metadata={"help": "Hub id, local folder or pkg:PACKAGE."})
    gguf_file: str | None = field(default=None, metadata={"help": "A GGUF file inside name_or_path."})
    dtype: DTYPES = field(default="float32", metadata={"help": "Weights dtype (fp32 master weights by default)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the model's own code (off by default)."})
    adapter: str | None = field(
        default=None, metadata={"help": "A PEFT adapter folder merged into name_or_path (a target given as LoRA)."}
    )
    train_data: list[Selection] | None = field(default=None, metadata={"help": "Fine-tune from models.base on these."})


@dataclass
class RecipeModels:
    base: ModelSource | None = None
    target: ModelSource | None = None
    retain: ModelSource | None = None


@dataclass
class ReportArguments:
    """`report:` in a recipe: the questions samples.md shows (`min`: the bound `from_mapping` checks)."""

    samples: int = field(default=5, metadata={"help": "Retain questions shown in samples.md.", "min": 0})
    forget_samples: int = field(
        default=0, metadata={"help": "Forget questions in samples.md (opt-in: privacy).", "min": 0}
    )


@dataclass
class TrajectoryArguments:
    """Cheap TOFU evaluations while each method unlearns (`trajectory:` in a recipe): teacher-forced metrics only (no
    generation) on the first items of each split, at the start and every `eval_steps` optimizer steps, kept as
    `history` in results.json. They give trade-off curves and comparisons at matched forgetting, and `stop_at`
    ends a method's unlearning once a forgetting target is reached (`StopAtTargetCallback`)."""

    eval_steps: int = field(
        default=10, metadata={"help": "Evaluate every this many optimizer steps (and at step 0).", "min": 1}
    )
    max_forget_items: int | None = field(
        default=50, metadata={"help": "First forget (and holdout) items scored per evaluation; null: all.", "min": 1}
    )
    max_utility_items: int | None = field(
        default=25,
        metadata={"help": "First retain / real_authors / world_facts items per evaluation; null: all.", "min": 1},
    )
    stop_at: str | None = field(
        default=None, metadata={"help": "Stop unlearning when this holds, e.g. 'forget_Q_A_Prob <= 0.1'."}
    )
    evaluate_at_end: bool = field(
        default=True,
        metadata={
            "help": "Run the evaluation suite on each unlearned model; false: its last trajectory evaluation stands "
            "for it (seed sweeps read trajectories only)."
        },
    )

    def __post_init__(self) -> None:
        if self.stop_at is not None:
            MetricCondition.parse(self.stop_at)  # a malformed condition fails now, not after the fine-tuning

    def model_settings(self) -> dict[str, Any]:
        """The settings an unlearned model depends on (its stage fingerprint): `stop_at` ends the training where the
        evaluations say; whether the suite runs afterwards does not change it."""
        return {key: value for key, value in dataclasses.asdict(self).items() if key != "evaluate_at_end"}

    def eval_arguments(self, evaluation: TofuEvalArguments) -> TofuEvalArguments:
        """The recipe's evaluation settings, teacher-forced only and limited to the trajectory's items."""
        forget, utility = self.max_forget_items, self.max_utility_items
        return dataclasses.replace(
            evaluation,
            compute_rouge=False,
            max_items=None,
            max_forget_items=forget,
            max_holdout_items=forget,
            max_retain_items=utility,
            max_real_authors_items=utility,
            max_world_facts_items=utility,
        )


@dataclass(frozen=True)
class ModelSpec:
    """Where a model is loaded from. `identity()` is what enters fingerprints: for a local folder, the content hash of
    every model file (weights, config, tokenizer), so a replaced checkpoint is never mistaken for the old one."""

    name_or_path: str
    gguf_file: str | None = None
    dtype: str = "float32"  # fp32 master weights; bf16 compute comes from the trainer's autocast (`bf16: true`)
    trust_remote_code: bool = False
    adapter: str | None = None  # a PEFT adapter folder applied on top (unlearning with LoRA)
    merge_adapter: bool = False  # merge it into the weights on loading (a given target or retain adapter)

    @property
    def path(self) -> str:
        return resolve_model_path(self.name_or_path)

    def describe(self) -> str:
        text = self.name_or_path + (f" ({self.gguf_file})" if self.gguf_file else "")
        return text + (f" + adapter {self.adapter}" if self.adapter else "")

    def identity(self) -> dict[str, Any]:
        """What fingerprints key this model by (`runtime.hashing.model_identity`): its load settings and the content
        hash of every model file, never the spelling of its path."""
        return model_identity(
            self.name_or_path,
            gguf_file=self.gguf_file,
            dtype=self.dtype,
            trust_remote_code=self.trust_remote_code,
            adapter=self.adapter,
        )


UNLEARN_DATA_ROLES = ("forget", "retain")
# The evaluation's formatting comes from the recipe's `formatting` and `forget_split`, not from `evaluation`.
EVALUATION_KEYS = tuple(
    sorted(set(TofuEvalArguments.__dataclass_fields__) - set(TofuFormat.__dataclass_fields__) - {"forget_split"})
)
# The attacks this task runs, and the relearning sets it has (its unrelated text is what model utility scores).
TOFU_ATTACKS = ("relearn", "quant8", "quant4", "paraphrase", "prefix", "logit_lens")
TOFU_RELEARN_SETS = ("forget_subset", "related")


@dataclass
class TofuRecipe:
    """A TOFU recipe (`recipes/tofu/*.yaml`), typed; `parse_tofu_recipe` checks it completely and fills it in: the
    folders as paths (command-line overrides applied), the seed in `finetune` and `unlearn`, the default unlearning
    data, the methods resolved, the evaluation arguments built, the Hub pushes taken out into `hub`."""

    task: Literal["tofu"] = "tofu"
    output_dir: Path | None = field(default=None, metadata={"help": "Default: outputs/tofu/<forget_split>."})
    models_dir: Path | None = field(default=None, metadata={"help": "Fine-tuned models; default: OUTPUT/models."})
    seed: int = 42
    data_dir: str | None = field(default=None, metadata={"help": "A local TOFU folder (default: the Hub)."})
    forget_split: str = "forget05"
    formatting: TofuFormat = field(default_factory=TofuFormat)
    models: RecipeModels = field(default_factory=RecipeModels)
    finetune: dict[str, Any] = field(default_factory=dict, metadata={"help": "SFTConfig fields."})
    finetune_lora: dict[str, Any] | None = None
    # Optional: fine-tune the target with ℓ + α‖∇_θ ℓ‖ (IAU's training phase); the retain model, the reference,
    # stays plain.
    finetune_gradient_restriction: GradientRestriction | None = None
    unlearn_data: dict[str, list[Selection]] = field(
        default_factory=dict,
        metadata={
            "help": "forget (default: the forget split), retain (default: retainYY).",
            "keys": UNLEARN_DATA_ROLES,
        },
    )
    unlearn: dict[str, Any] = field(default_factory=dict, metadata={"help": "Settings shared by every method."})
    unlearn_lora: dict[str, Any] | None = None
    methods: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"help": "label -> {method: NAME, **config fields}."}
    )
    evaluation: TofuEvalArguments = field(default_factory=TofuEvalArguments, metadata={"keys": EVALUATION_KEYS})
    trajectory: TrajectoryArguments | None = None  # cheap evaluations during unlearning (and stop_at)
    report: ReportArguments = field(default_factory=ReportArguments)
    launch: LaunchArguments = field(default_factory=LaunchArguments)
    save_dtype: Literal["float32", "bfloat16", "float16"] | None = None  # None: as trained (fp32)
    attacks: AttackArguments | None = field(
        default=None,
        metadata={"help": "Attack every unlearned model (and the target and retain controls): docs/attacks.md."},
    )
    # Filled in by parse_tofu_recipe (not recipe keys): the folders this run writes (`output_dir` and `models_dir`
    # with the command line's overrides and the defaults applied), the forget split's evaluation configs, the models
    # (role -> a given model; the base of the fine-tuned ones; role -> what it is fine-tuned on), and label -> its Hub
    # push, taken out of `unlearn`/`methods`.
    output_path: Path | None = field(default=None, init=False, repr=False)
    models_path: Path | None = field(default=None, init=False, repr=False)
    configs: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    given: dict[str, ModelSpec] = field(default_factory=dict, init=False, repr=False)
    base: ModelSpec | None = field(default=None, init=False, repr=False)
    train_data: dict[str, list[Selection]] = field(default_factory=dict, init=False, repr=False)
    hub: dict[str, HubPush] = field(default_factory=dict, init=False, repr=False)

    @property
    def specs(self) -> dict[str, dict[str, Any]]:
        """The resolved methods (label -> {method, **config fields}); the name the publishing code uses."""
        return self.methods

    def settings(self) -> dict[str, Any]:
        """Everything that shapes the results, for `results.json` (no text)."""
        extra = {}
        if self.finetune_gradient_restriction is not None:  # only when set: existing results.json stay as they were
            extra["finetune_gradient_restriction"] = dataclasses.asdict(self.finetune_gradient_restriction)
        if self.trajectory is not None:
            extra["trajectory"] = dataclasses.asdict(self.trajectory)
        if self.attacks is not None:
            extra["attacks"] = self.attacks.settings()
        return {
            **extra,
            "forget_split": self.forget_split,
            "data_dir": self.data_dir,
            "formatting": self.formatting.formatting(),
            "models": {
                **{r: m.describe() for r, m in self.given.items()},
                **{
                    r: f"fine-tuned from {self.base.describe()} on {describe_selections(s)}"
                    for r, s in self.train_data.items()
                },
            },
            "finetune": self.finetune if self.train_data else None,
            "finetune_lora": self.finetune_lora,
            "unlearn_data": {k: describe_selections(v) for k, v in self.unlearn_data.items()},
            "unlearn": self.unlearn,
            "unlearn_lora": self.unlearn_lora,
            "methods": self.methods,
            "evaluation": self.evaluation.settings(),
            "report": dataclasses.asdict(self.report),
            "save_dtype": self.save_dtype,
        }


def parse_tofu_recipe(
    raw: dict[str, Any],
    *,
    output_dir: str | os.PathLike | None = None,
    models_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    require_methods: bool = True,
    dry_run: bool = False,
) -> TofuRecipe:
    """Check a TOFU recipe completely (keys, types, model sources, selections, SFT / LoRA / method configs) and fill
    it in (see `TofuRecipe`). Raises a RecipeError naming the bad key or value.

    For a real run the configs are built as they will be used, so a setting this machine cannot honour (bf16 without
    a GPU) fails now, not after hours of fine-tuning; `dry_run=True` validates for any machine."""
    recipe: TofuRecipe = from_mapping(TofuRecipe, raw, "the TOFU recipe", root=True)
    _check_attacks(recipe.attacks)
    try:
        recipe.configs = tofu_split_configs(recipe.forget_split)
    except ValueError as error:
        raise RecipeError(f"forget_split: {error}") from None
    out = Path(output_dir or recipe.output_dir or f"outputs/tofu/{recipe.forget_split}")
    recipe.output_dir = recipe.output_path = out
    recipe.models_dir = recipe.models_path = Path(models_dir or recipe.models_dir or out / "models")
    if data_dir is not None:
        recipe.data_dir = str(data_dir)
    _fill_models(recipe)
    if recipe.unlearn_lora and recipe.models.target.adapter is not None:
        raise RecipeError(
            "unlearn_lora on a target given as an adapter (models.target.adapter) is not supported: unlearn the "
            "merged target in full, or merge the adapter into a folder and give that as models.target.name_or_path."
        )
    train_data = recipe.train_data
    if train_data and recipe.base is None:
        raise RecipeError(
            f"models.{next(iter(train_data))} has train_data but the recipe has no models.base to fine-tune."
        )
    if train_data:
        recipe.finetune = {"seed": recipe.seed, **recipe.finetune}
        build_sft_config(recipe.finetune, out / "_check", check_only=dry_run)
        build_lora_config(recipe.finetune_lora, "finetune_lora")
    elif recipe.finetune or recipe.finetune_lora:
        raise RecipeError("The recipe has `finetune` settings but no model with train_data to fine-tune.")
    else:
        recipe.finetune = {"seed": recipe.seed}
    if recipe.finetune_gradient_restriction is not None and "target" not in train_data:
        raise RecipeError(
            "finetune_gradient_restriction applies to the target's fine-tuning, but models.target is given, not "
            "fine-tuned (it needs train_data)."
        )

    percent = int(recipe.forget_split[len("forget") :])
    recipe.unlearn_data = {
        "forget": recipe.unlearn_data.get("forget") or [Selection(recipe.forget_split)],
        "retain": recipe.unlearn_data.get("retain") or [Selection(f"retain{100 - percent:02d}")],
    }
    specs = method_specs(recipe.methods) if require_methods or recipe.methods else {}
    shared = {"seed": recipe.seed, **recipe.unlearn}
    build_lora_config(recipe.unlearn_lora, "unlearn_lora")
    for label, spec in specs.items():  # fail on a bad method setting before hours of fine-tuning, not after
        _build_checked(
            spec, shared, out / "_check", check_only=dry_run or not require_methods, where=f"methods.{label}"
        )
    # Where and whether to push never shapes a model: out of the training settings and fingerprints, into hub.
    recipe.methods, recipe.unlearn, recipe.hub = plan_hub_pushes(
        specs,
        shared,
        lambda label, merged: _build_checked(merged, {}, out / "_check", where=f"methods.{label}"),
        lambda label: out / "methods" / label / "hub",
        is_peft=bool(recipe.unlearn_lora),
    )
    if recipe.hub and recipe.trajectory is not None and not recipe.trajectory.evaluate_at_end:
        raise RecipeError("hub: a pushed model's card carries its evaluation; set trajectory.evaluate_at_end: true.")
    try:
        recipe.evaluation = dataclasses.replace(
            recipe.evaluation, **recipe.formatting.formatting(), forget_split=recipe.forget_split
        )
    except (TypeError, ValueError) as error:
        raise RecipeError(f"evaluation: {error}") from None
    return recipe


def _fill_models(recipe: TofuRecipe) -> None:
    """Check every model source and fill in `recipe.base` and `recipe.given` (the models loaded as they are) and
    `recipe.train_data` (role -> what the model is fine-tuned on, from the base)."""
    for role in ("base", *ROLES):
        source = getattr(recipe.models, role)
        if source is None:
            if role == "base":
                continue
            raise RecipeError(f"models.{role} is missing: give name_or_path, or train_data to fine-tune it.")
        if role == "base" and (source.train_data is not None or source.adapter is not None):
            raise RecipeError("models.base takes name_or_path only (it is what the other models are fine-tuned from).")
        if source.train_data is not None:
            given = [name for name in ("name_or_path", "gguf_file", "adapter") if getattr(source, name) is not None]
            if given:
                raise RecipeError(
                    f"models.{role}: give either train_data (fine-tune from models.base) or name_or_path, not both "
                    f"(also got {given})."
                )
            if not source.train_data:
                raise RecipeError(
                    f"models.{role}: train_data must list at least one selection, e.g. [{{config: forget05}}]."
                )
            recipe.train_data[role] = source.train_data
            continue
        if not source.name_or_path:
            raise RecipeError(f"models.{role}: needs name_or_path (Hub id, folder or pkg:PACKAGE) or train_data.")
        # A given adapter is part of the model: merged, then trained or scored as one.
        spec = ModelSpec(
            source.name_or_path,
            source.gguf_file,
            source.dtype,
            source.trust_remote_code,
            source.adapter,
            merge_adapter=source.adapter is not None,
        )
        if role == "base":
            recipe.base = spec
        else:
            recipe.given[role] = spec


def _check_attacks(args: AttackArguments | None) -> None:
    """The attacks and relearning sets this task can run (`TOFU_ATTACKS`, `TOFU_RELEARN_SETS`)."""
    why = "its unrelated text is what model utility scores"
    if message := unsupported_attacks(args, "TOFU", TOFU_ATTACKS, TOFU_RELEARN_SETS, why):
        raise RecipeError(message)


# The name `publish.py` and `checks.py` still use: the same class (the alias can go once they say TofuRecipe).
TofuPlan = TofuRecipe


def build_sft_config(settings: dict[str, Any], output_dir: str | os.PathLike, check_only: bool = False):
    """TRL's `SFTConfig` from the recipe's `finetune` settings over `SFT_DEFAULTS`, every value type-checked.

    `check_only` (dry runs, recipe validation) builds it on any machine: bf16/fp16 without a GPU get `use_cpu=True`,
    which only skips TrainingArguments' hardware check."""
    from trl import SFTConfig

    defaults = {**SFT_DEFAULTS, **checkpointing_settings(SFTConfig, False)}  # TRL turns checkpointing on by default
    if "gradient_checkpointing" in settings or "activation_checkpointing" in settings:
        defaults = {
            k: v for k, v in defaults.items() if k not in ("gradient_checkpointing", "activation_checkpointing")
        }
    return from_mapping(
        SFTConfig,
        _checkable({**defaults, **settings}, check_only),
        "finetune (SFTConfig fields)",
        output_dir=str(output_dir),
    )


def build_lora_config(settings: dict[str, Any] | None, where: str):
    """`peft.LoraConfig(task_type="CAUSAL_LM", **settings)`, or None."""
    if not settings:
        return None
    from peft import LoraConfig

    return from_mapping(LoraConfig, {"task_type": "CAUSAL_LM", **settings}, f"{where} (LoraConfig fields)")


def _checkable(settings: dict[str, Any], check_only: bool) -> dict[str, Any]:
    import torch

    half = settings.get("bf16") or settings.get("fp16")
    if check_only and half and not torch.cuda.is_available():
        return {**settings, "use_cpu": True}
    return settings


def _build_checked(
    spec: dict[str, Any], shared: dict[str, Any], output_dir: Path, check_only: bool = True, where: str = ""
):
    settings = _checkable({**shared, **{k: v for k, v in spec.items() if k != "method"}}, check_only)
    return build_method_config({"method": spec["method"], **settings}, {}, output_dir, where=where)


# ------------------------------------------------------------------------------------------------ dry run


def describe_plan(plan: TofuRecipe, command: str, recipe_arg: str) -> str:
    """What `run` / `finetune` would do, every config built (no weights loaded, no data downloaded)."""
    from ...trainers import METHODS

    processes = plan.launch.num_processes
    lines = [
        f"TOFU {plan.forget_split} ({'locuslab/TOFU from the Hub' if plan.data_dir is None else plan.data_dir}); "
        f"outputs in {plan.output_dir}, fine-tuned models in {plan.models_dir}.",
        f"Formatting: {plan.formatting.formatting()}",
        "",
        "Models:",
    ]
    for role in ROLES:
        if role in plan.given:
            lines.append(f"  {role}: given, {plan.given[role].describe()} (loaded as {plan.given[role].dtype})")
        else:
            lines.append(
                f"  {role}: fine-tuned from {plan.base.describe()} on {describe_selections(plan.train_data[role])}"
            )
    if plan.train_data:
        sft = build_sft_config(plan.finetune, plan.models_dir / "_plan", check_only=True)
        lines.append(
            "  fine-tuning: trl.SFTTrainer, "
            + _train_summary(sft, processes)
            + f", completion_only_loss={sft.completion_only_loss}, max_length={sft.max_length}"
            + (f", LoRA {plan.finetune_lora}" if plan.finetune_lora else ", full fine-tuning")
            + (
                f"; target with the gradient-restricted loss {plan.finetune_gradient_restriction}"
                if plan.finetune_gradient_restriction
                else ""
            )
        )
    if command == "run":
        lines += [
            "",
            f"Unlearning: forget = {describe_selections(plan.unlearn_data['forget'])}, retain = "
            f"{describe_selections(plan.unlearn_data['retain'])}"
            + (f", LoRA {plan.unlearn_lora}" if plan.unlearn_lora else ", full model")
            + (f", saved as {plan.save_dtype}" if plan.save_dtype else ""),
        ]
        for label, spec in plan.methods.items():
            config = _build_checked(spec, plan.unlearn, plan.output_dir / "_plan")
            extra = {k: v for k, v in spec.items() if k != "method"}
            lines.append(
                f"  {label}: {METHODS[spec['method']][1].__name__}({type(config).__name__}), "
                f"{_train_summary(config, processes)}, retain_loss={config.retain_loss}, "
                f"trainable={config.trainable}" + (f", {extra}" if extra else "")
            )
        if plan.hub:
            lines += describe_pushes(plan.hub.values())
        ev = plan.evaluation
        limits = {split: ev.item_limit(split) for split in plan.configs if ev.item_limit(split)}
        subsets = ", ".join(f"{k} first {v}" for k, v in limits.items()) or "all items"
        lines += [
            "",
            f"Evaluation (target, retain, every method): {subsets}; max_new_tokens {ev.max_new_tokens}, "
            f"batch {ev.batch_size}",
        ]
        if plan.trajectory is not None:
            t = plan.trajectory
            lines.append(
                f"Trajectory: teacher-forced evaluation at step 0 and every {t.eval_steps} steps (forget/holdout first "
                f"{t.max_forget_items or 'all'}, utility splits first {t.max_utility_items or 'all'})"
                + (f"; stop at {t.stop_at}" if t.stop_at else "")
                + ("" if t.evaluate_at_end else "; no evaluation suite at the stop (evaluate_at_end: false)")
            )
        if plan.attacks is not None:
            a = plan.attacks
            lines.append(
                f"Attacks (every method; target and retain as controls: {a.controls}): {', '.join(a.attacks)}; "
                f"relearning {', '.join(a.relearn_sets)} at steps {a.relearn.steps}, lr {a.relearn.learning_rate}; "
                f"quantization {a.quant_backend}; {a.eval_examples or 'all'} items per split scored (one process)"
            )
    lines += [
        "",
        "Launch:",
        f"  accelerate launch --num_processes {processes} -m hf_unlearn.cli {command} {recipe_arg}",
    ]
    if processes > 1:  # `accelerate launch` starts one process on a machine without GPUs
        lines += [
            f"  sharded (FSDP2, DeepSpeed ZeRO-2/3): accelerate launch --config_file recipes/accelerate/fsdp2.yaml "
            f"--num_processes {processes} -m hf_unlearn.cli {command} {recipe_arg}",
            f"  on CPUs: torchrun --nproc_per_node {processes} -m hf_unlearn.cli {command} {recipe_arg}",
        ]
    return "\n".join(lines)


def _train_summary(config, processes: int) -> str:
    per_device, accumulation = config.per_device_train_batch_size, config.gradient_accumulation_steps
    precision = "bf16 autocast, fp32 weights" if config.bf16 else ("fp16 autocast" if config.fp16 else "fp32")
    optim, schedule = (getattr(value, "value", value) for value in (config.optim, config.lr_scheduler_type))
    # max_steps > 0 overrides the epochs (Trainer's rule), as in IAU's single step
    length = f"{config.max_steps} step(s)" if config.max_steps > 0 else f"{config.num_train_epochs:g} epochs"
    return (
        f"lr {config.learning_rate:g}, {length}, batch {per_device} x {accumulation} "
        f"accumulation x {processes} process(es) = {per_device * accumulation * processes}, {precision}, "
        f"optim {optim}, warmup {config.warmup_steps:g}, weight decay {config.weight_decay:g}, "
        f"{schedule} schedule"
    )
