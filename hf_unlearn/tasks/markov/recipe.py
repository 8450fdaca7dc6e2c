"""The Markov recipe as typed data: every section a dataclass or a library config, checked before anything trains."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ...attacks.suite import AttackArguments
from ...hub import HubPush, describe_pushes, plan_hub_pushes, split_hub_settings
from ...recipe import (
    LaunchArguments,
    RecipeError,
    build_method_config,
    check_keys,
    convert,
    from_mapping,
    method_specs,
)
from ...trainers.gradient_restriction_config import GradientRestriction
from .attacks import check_markov_attacks
from .data import MarkovDataArguments

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TRAIN",
    "ORIGINAL_TRAINING_DATA",
    "MarkovEvalArguments",
    "MarkovRecipe",
    "describe_markov_recipe",
    "method_original",
    "parse_markov_recipe",
]

ORIGINAL_TRAINING_DATA = {"retain+forget1": ["retain", "forget1"], "all": ["retain", "forget1", "forget2"]}
# Which original model a method unlearns (a method entry's `original:` key): the plainly trained one, or the one
# trained with the gradient-restricted loss (IAU's training phase; the recipe's `original_gradient_restriction`).
ORIGINALS = ("standard", "gradient_restricted")
# The reference's training of the original and retrained models: AdamW lr 5e-4, eps 1e-6, no weight decay, batch 128,
# 5 epochs, constant lr (`docs/metrics.md#markov`); the other keys keep the run quiet and file-free.
DEFAULT_TRAIN = {
    "learning_rate": 5e-4,
    "adam_epsilon": 1e-6,
    "weight_decay": 0.0,
    "per_device_train_batch_size": 128,
    "num_train_epochs": 5,
    "lr_scheduler_type": "constant",
    "logging_steps": 50,
    "save_strategy": "no",
    "report_to": "none",
}
DEFAULT_MODEL = {"n_layer": 4, "n_embd": 128, "n_head": 4}


@dataclass
class MarkovEvalArguments:
    """The recipe's `evaluation` section.

    Parameters:
        trajectory_examples (`int` or `None`, defaults to `None`):
            The per-step evaluation that draws the trade-off curve uses the first N sequences of each test split
            (None: all). On a CPU it dominates the run; final numbers always use the full test sets.
        final_examples (`int` or `None`, defaults to `None`):
            The final numbers of every model use the first N sequences of each test split (None: all, the
            benchmark's numbers). Grids of many runs that read the trajectory only set it small.
        stop_at_forget_kl (`float` or `None`, defaults to `None`):
            End each method's unlearning after the first step whose trajectory forget KL reaches this level (None:
            run every step). Studies read at matched forgetting need no steps past their highest level.
        batch_size (`int`, defaults to `1024`):
            Sequences per evaluation forward pass.
    """

    trajectory_examples: int | None = field(default=None, metadata={"help": "Test sequences per split per step."})
    final_examples: int | None = field(default=None, metadata={"help": "Test sequences per split, final numbers."})
    stop_at_forget_kl: float | None = field(
        default=None, metadata={"help": "End unlearning once the trajectory's forget KL reaches this level."}
    )
    batch_size: int = field(default=1024, metadata={"help": "Sequences per evaluation forward pass."})

    def __post_init__(self) -> None:
        if self.trajectory_examples is not None and self.trajectory_examples < 1:
            raise ValueError(f"trajectory_examples must be >= 1 or null, got {self.trajectory_examples}.")
        if self.final_examples is not None and self.final_examples < 1:
            raise ValueError(f"final_examples must be >= 1 or null, got {self.final_examples}.")
        if self.stop_at_forget_kl is not None and self.stop_at_forget_kl <= 0:
            raise ValueError(f"stop_at_forget_kl must be > 0 or null, got {self.stop_at_forget_kl}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")


@dataclass
class MarkovRecipe:
    """A validated Markov recipe (`recipes/markov.yaml`); see the field helps for each section."""

    task: Literal["markov"] = "markov"
    output_dir: str = field(default="outputs/markov", metadata={"help": "Where results.json and plots go."})
    models_dir: str | None = field(default=None, metadata={"help": "Cache of the original/retrained models."})
    seed: int = 42
    data: MarkovDataArguments = field(default_factory=MarkovDataArguments)
    model: dict[str, Any] = field(default_factory=dict, metadata={"help": "GPT2Config fields over DEFAULT_MODEL."})
    original_training_data: Literal["retain+forget1", "all"] = "retain+forget1"
    original_gradient_restriction: GradientRestriction | None = field(
        default=None,
        metadata={
            "help": "Also train an original model with ℓ + α‖∇_θ ℓ‖ (IAU eq. 7); methods with "
            "`original: gradient_restricted` unlearn it. The retrained model stays plainly trained."
        },
    )
    train: dict[str, Any] = field(default_factory=dict, metadata={"help": "TrainingArguments over DEFAULT_TRAIN."})
    evaluation: MarkovEvalArguments = field(default_factory=MarkovEvalArguments)
    unlearn: dict[str, Any] = field(default_factory=dict, metadata={"help": "Settings shared by every method."})
    methods: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"help": "label -> {method: NAME, **config fields}."}
    )
    launch: LaunchArguments = field(default_factory=LaunchArguments)
    attacks: AttackArguments | None = field(
        default=None,
        metadata={"help": "Attack every unlearned model (and the original and retrained controls): docs/attacks.md."},
    )
    # label -> its push, taken out of `unlearn`/`methods` by parse_markov_recipe (not a recipe key).
    hub: dict[str, HubPush] = field(default_factory=dict, init=False, repr=False)

    @property
    def model_settings(self) -> dict[str, Any]:
        return {**DEFAULT_MODEL, **self.model}

    @property
    def train_settings(self) -> dict[str, Any]:
        return {**DEFAULT_TRAIN, "seed": self.seed, **self.train}

    @property
    def shared_unlearn(self) -> dict[str, Any]:
        return {"seed": self.seed, **self.unlearn}

    @property
    def needs_gradient_restricted_original(self) -> bool:
        """Whether a method of this run unlearns the gradient-restricted original (only then is it trained)."""
        return any(method_original(spec)[0] == "gradient_restricted" for spec in self.methods.values())

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir or Path(self.output_dir) / "models")

    def settings(self) -> dict[str, Any]:
        """What shapes the results, for `results.json`."""
        return {
            "data": {"seed": self.seed, **dataclasses.asdict(self.data)},
            "model": self.model_settings,
            "original_training_data": self.original_training_data,
            "original_gradient_restriction": (
                dataclasses.asdict(self.original_gradient_restriction) if self.original_gradient_restriction else None
            ),
            "train": self.train_settings,
            "unlearn": self.shared_unlearn,
            "evaluation": dataclasses.asdict(self.evaluation),
            **({"attacks": self.attacks.settings()} if self.attacks is not None else {}),
        }


def parse_markov_recipe(raw: dict[str, Any], output_dir: str | None = None) -> MarkovRecipe:
    """Check a Markov recipe completely (keys, types, the GPT-2 config, TrainingArguments and every method config)
    and fill in defaults; raises a RecipeError naming the bad key or value."""
    recipe = from_mapping(MarkovRecipe, raw, "the Markov recipe", root=True)
    if output_dir is not None:
        recipe.output_dir = str(output_dir)
    recipe.methods = method_specs(recipe.methods)
    check_markov_attacks(recipe.attacks)
    gpt2_config(recipe.model_settings, max(recipe.data.length, recipe.data.forget2_length or 0))
    training_arguments(recipe.train_settings, Path(recipe.output_dir) / "_check")
    for label, spec in recipe.methods.items():  # fail on a bad method setting before any training, not after
        original, config_spec = method_original(spec, f"methods.{label}")
        if original == "gradient_restricted" and recipe.original_gradient_restriction is None:
            raise RecipeError(
                f"methods.{label}: original: gradient_restricted needs the recipe's original_gradient_restriction "
                "section (e.g. `original_gradient_restriction: {weight: 0.005}`)."
            )
        build_method_config(
            config_spec, recipe.shared_unlearn, Path(recipe.output_dir) / "_check", where=f"methods.{label}"
        )
    # Where and whether to push never shapes a model: out of the training settings, into recipe.hub.
    recipe.methods, _, recipe.hub = plan_hub_pushes(
        recipe.methods,
        recipe.shared_unlearn,
        lambda label, merged: build_method_config(
            method_original(merged, f"methods.{label}")[1],
            {},
            Path(recipe.output_dir) / "_check",
            where=f"methods.{label}",
        ),
        lambda label: Path(recipe.output_dir) / "methods" / label / "hub",
        is_peft=False,
    )
    recipe.unlearn = split_hub_settings(recipe.unlearn)[0]
    return recipe


def method_original(spec: dict[str, Any], where: str = "a method") -> tuple[str, dict[str, Any]]:
    """A method entry's `original` (which original model it unlearns, default "standard") and the entry without it
    (method name and config fields)."""
    original = spec.get("original", "standard")
    if original not in ORIGINALS:
        raise RecipeError(f"{where}.original: {original!r} is not one of {', '.join(map(repr, ORIGINALS))}.")
    return original, {key: value for key, value in spec.items() if key != "original"}


def gpt2_config(settings: dict[str, Any], max_length: int):
    """A small GPT-2 over the states plus one padding id (the last id)."""
    from transformers import GPT2Config

    defaults = GPT2Config().to_dict()
    check_keys(settings, set(defaults), "model (GPT2Config fields)")
    typed = {
        key: convert(value, type(defaults[key]), f"model.{key}")
        if type(defaults[key]) in (int, float, bool, str)
        else value
        for key, value in settings.items()
    }
    config = GPT2Config(
        **{
            "vocab_size": 11,
            "n_positions": max_length,
            "pad_token_id": 10,
            "bos_token_id": 10,
            "eos_token_id": 10,
            **typed,
        }
    )
    from ...models import check_model_config

    try:
        check_model_config(config)
    except ValueError as error:
        raise RecipeError(str(error)) from None
    if config.n_positions < max_length:  # GPT-2's learned positions end there: an IndexError inside torch
        raise RecipeError(
            f"model.n_positions: {config.n_positions} is shorter than the sequences ({max_length} states): raise it "
            "or leave it out (it defaults to the sequence length)."
        )
    return config


def training_arguments(settings: dict[str, Any], output_dir: Path):
    """`TrainingArguments` of the original and retrained models, every value type-checked."""
    from transformers import TrainingArguments

    from ...utils import has_accelerator

    # Every GPT-2 parameter takes part in the loss: DDP need not search for unused ones (nor warn that it found none).
    return from_mapping(
        TrainingArguments,
        {
            "remove_unused_columns": False,
            "ddp_find_unused_parameters": False,
            "dataloader_pin_memory": has_accelerator(),  # no pin-memory warning on a CPU-only machine
            **settings,
        },
        "train (TrainingArguments)",
        output_dir=str(output_dir),
    )


def describe_markov_recipe(recipe: MarkovRecipe) -> str:
    """The resolved settings of every section, for `--dry-run` (nothing is trained)."""
    lines = [
        f"Markov benchmark; outputs in {recipe.output_dir}, models cached in {recipe.models_path}.",
        "",
        f"Data: {dataclasses.asdict(recipe.data)}, seed {recipe.seed}",
        f"Model: GPT-2 {recipe.model_settings}",
        f"Original model trained on {' ∪ '.join(ORIGINAL_TRAINING_DATA[recipe.original_training_data])}"
        + (
            f" (and once more with the gradient-restricted loss, {recipe.original_gradient_restriction})"
            if recipe.needs_gradient_restricted_original
            else ""
        )
        + "; retrained model on retain",
        f"Training: {recipe.train_settings}",
        f"Evaluation: {dataclasses.asdict(recipe.evaluation)}",
        f"Launch: {recipe.launch.num_processes} process(es); batch sizes are per process",
        f"Attacks: {recipe.attacks.settings() if recipe.attacks is not None else 'none'}",
        "",
        "Unlearning:",
    ]
    for label, spec in recipe.methods.items():
        original, config_spec = method_original(spec)
        config = build_method_config(config_spec, recipe.shared_unlearn, Path(recipe.output_dir) / "_plan")
        lines.append(
            f"  {label}: {type(config).__name__}(lr {config.learning_rate:g}, max_steps {config.max_steps}, "
            f"batch {config.per_device_train_batch_size}, retain_loss {config.retain_loss}, trainable "
            f"{config.trainable}, original {original}) { ({k: v for k, v in config_spec.items() if k != 'method'}) }"
        )
    if recipe.hub:
        lines += describe_pushes(recipe.hub.values())
    return "\n".join(lines)
