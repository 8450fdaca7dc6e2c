"""Shared configuration of every unlearning trainer."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from ..influence.arguments import InfluenceWeighting
from ..utils import has_accelerator

__all__ = ["UnlearnConfig", "check_numeric_fields", "check_report_to", "check_training_numbers"]

RETAIN_LOSSES = ("none", "nll", "kl")
REFERENCES = ("precomputed", "live")
TRAINABLE = ("all", "head", "lora", "patterns")


def check_numeric_fields(config: Any) -> None:
    """A TypeError naming the field for a number given as a string or a boolean (`learning_rate="1e-4"`), which
    `TrainingArguments` would keep and the optimizer reject deep inside torch. The command line and recipes convert
    their strings before this runs."""
    hints = typing.get_type_hints(type(config))
    for item in dataclasses.fields(config):
        annotation = hints.get(item.name)
        numeric = {int, float} & ({annotation} | set(typing.get_args(annotation)))
        value = getattr(config, item.name)
        if numeric and isinstance(value, (str, bool)) and not ({str, bool} & set(typing.get_args(annotation))):
            kind = "a number" if float in numeric else "an integer"
            hint = " (a quoted number is a string: drop the quotes)" if isinstance(value, str) else ""
            raise TypeError(f"{item.name}={value!r} is not {kind}{hint}.")


def check_training_numbers(config: Any) -> None:
    """A ValueError naming the field for a training number that would fail late or train something else: epochs
    that are not finite, no accumulation, a negative learning rate (ascent would become descent), empty batches."""
    if config.max_steps < 0 and not math.isfinite(config.num_train_epochs):
        raise ValueError(f"num_train_epochs={config.num_train_epochs} is not a finite number of epochs: set a number.")
    if not math.isfinite(config.learning_rate) or config.learning_rate < 0:
        raise ValueError(
            f"learning_rate={config.learning_rate} must be a finite number >= 0 (the method's loss sets the "
            "direction: a negative rate would turn its ascent into descent)."
        )
    for name in ("gradient_accumulation_steps", "per_device_train_batch_size", "per_device_eval_batch_size"):
        value = getattr(config, name)
        if value < 1:
            raise ValueError(f"{name}={value} must be >= 1.")


# report_to names whose package transformers imports only when training starts: checked before any work.
_REPORTING_PACKAGES = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "trackio": ("trackio",),
    "mlflow": ("mlflow",),
    "comet_ml": ("comet_ml",),
    "neptune": ("neptune",),
    "clearml": ("clearml",),
    "dvclive": ("dvclive",),
    "swanlab": ("swanlab",),
    "codecarbon": ("codecarbon",),
}


def check_report_to(report_to: Any) -> None:
    """A ValueError naming the package for a `report_to` integration that is not installed (transformers would fail
    only when training starts, after the expensive preparation)."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    for name in names:
        packages = _REPORTING_PACKAGES.get(name)
        if packages and not any(importlib.util.find_spec(package) for package in packages):
            extra = f" (`pip install 'hf-unlearn[{name}]'`)" if name in ("tensorboard", "trackio") else ""
            raise ValueError(f"report_to={name!r} needs the {packages[0]} package, which is not installed{extra}.")


@dataclass
class UnlearnConfig(TrainingArguments):
    r"""
    Arguments shared by all unlearning trainers. Defaults follow the TOFU reference recipe (`docs/methods.md`):
    AdamW, lr 1e-5, weight decay 0.01, 10 epochs, grad clip 1.0.

    Parameters:
        retain_loss (`str`, *optional*, defaults to `"none"`):
            Retain term Ret(R) added to the forget loss: `"none"`, `"nll"` (token-mean NLL on the retain batch) or
            `"kl"` (KL(π_ref ‖ π_θ) averaged over the retain batch's labelled positions; the reference averages over
            all positions including padding, we mask).
        retain_loss_weight (`float` or `None`, *optional*, defaults to `None`):
            α: weight of the retain term; None is 1.0 with a retain term. Setting it with `retain_loss="none"` is
            refused (it would be ignored).
        reference (`str`, *optional*, defaults to `"precomputed"`):
            How methods that need the frozen initial model get its forget-set log-probs: `"precomputed"` (one pass
            before training, no reference model in memory) or `"live"` (a frozen copy, or the PEFT model with its
            adapter disabled, run on every batch). A `"kl"` retain term always needs the live reference.
        pairing_seed (`int` or `None`, *optional*, defaults to `None`):
            Seed of the forget/retain pairing (each forget example gets one uniformly random retain example per
            epoch). `None` uses `seed`.
        trainable (`str`, *optional*, defaults to `"all"`):
            Which parameters the method updates (`docs/methods.md#trainable-parameters`): `"all"` (every parameter
            that requires a gradient, e.g. a PEFT adapter's), `"head"` (the LM head only; tied input embeddings are
            untied first and stay bit-identical; with PEFT the head must be in `modules_to_save`), `"lora"` (the PEFT
            adapter; an error without one) or `"patterns"` (the parameters named by `trainable_patterns`, within
            the layers of `trainable_last_layers` / `trainable_layers_at_depth`). The count is logged.
        trainable_patterns (`list[str]` or `None`, *optional*, defaults to `None`):
            With `trainable="patterns"`: regexes searched in parameter names, e.g. `["mlp.down_proj", "o_proj"]`.
        trainable_last_layers (`int` or `None`, *optional*, defaults to `None`):
            With `trainable="patterns"`: only the last k decoder layers.
        trainable_layers_at_depth (`list[float]` or `None`, *optional*, defaults to `None`):
            With `trainable="patterns"`: decoder layers round(a·L) … round(b·L) for the fractions `[a, b]` (e.g.
            `[0.68, 0.75]` gives layers 19–21 of a 28-layer model).
        influence_weighting (`dict` or `None`, *optional*, defaults to `None`):
            Weight each forget sample's loss term by its LM-head influence score (IMU's weighting, on any method):
            a mapping of [`InfluenceWeighting`] fields, e.g. `{"psi": "sqrt", "top_ratio": 1.0}`; `None` is off.
        push_full_model (`bool`, *optional*, defaults to `False`):
            What `push_to_hub` uploads (`hf_unlearn.hub`): by default the smallest thing that holds the unlearning, the
            PEFT adapter, or for `trainable="head"` the head delta (`hf_unlearn.hub.load_head_delta`); `True`
            uploads the full model (a PEFT model merged). Without an adapter or a head-only update there is nothing
            smaller, and pushing needs `True`.
        hub_private_repo (`bool` or `None`, *optional*, defaults to `True`):
            As in `TrainingArguments`, but private by default: a model unlearned from private data stays private
            until its owner says otherwise.
        hub_strategy (`str`, *optional*, defaults to `"end"`):
            As in `TrainingArguments`, but pushing once, at `push_to_hub()` / `save_model()`, instead of every
            checkpoint (a checkpoint holds the full model and its optimizer state).
        dataset_kwargs (`dict` or `None`, *optional*, defaults to `None`):
            How the trainer tokenizes datasets given as text (question/answer columns, TRL `messages` or
            prompt/completion rows): keyword arguments of `hf_unlearn.data.tokenize_dataset`, e.g.
            `{"system_prompt": "You are a helpful assistant."}` (default: no system turn, the processing class's chat
            template). `{"skip_prepare_dataset": True}` (as in TRL) takes the datasets as they are.
        model_init_kwargs (`dict` or `None`, *optional*, defaults to `None`):
            When `model` is a Hub id or a path: keyword arguments of `hf_unlearn.models.load_model_and_tokenizer`
            (`dtype`, `gguf_file`, `trust_remote_code`).
        dataloader_pin_memory (`bool` or `None`, *optional*, defaults to `None`):
            None pins batches only when an accelerator is present (no pin-memory warning on a CPU-only machine).
    """

    retain_loss: str = field(
        default="none",
        metadata={
            "help": "Retain term Ret(R): 'none', 'nll' (CE on the retain batch) or 'kl' (KL(π_ref‖π_θ), masked)."
        },
    )
    retain_loss_weight: float | None = field(
        default=None, metadata={"help": "α: weight of the retain term (None: 1.0 with a retain term)."}
    )
    reference: str = field(
        default="precomputed",
        metadata={"help": "Reference log-probs: 'precomputed' once before training, or 'live' from a frozen model."},
    )
    pairing_seed: int | None = field(
        default=None, metadata={"help": "Seed of the random forget/retain pairing; None uses `seed`."}
    )
    trainable: str = field(default="all", metadata={"help": f"Parameters updated: one of {TRAINABLE}."})
    push_full_model: bool = field(
        default=False,
        metadata={"help": "push_to_hub uploads the full model (else the PEFT adapter or, head-only, the head delta)."},
    )
    dataset_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Arguments of tokenize_dataset for text datasets (e.g. system_prompt)."}
    )
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Arguments of load_model_and_tokenizer when `model` is a name or path."}
    )
    trainable_patterns: list[str] | None = field(
        default=None, metadata={"help": "With trainable='patterns': regexes searched in parameter names."}
    )
    trainable_last_layers: int | None = field(
        default=None, metadata={"help": "With trainable='patterns': only the last k decoder layers."}
    )
    trainable_layers_at_depth: list[float] | None = field(
        default=None, metadata={"help": "With trainable='patterns': layers round(a·L)..round(b·L) for [a, b]."}
    )
    influence_weighting: dict | None = field(
        default=None, metadata={"help": "IMU's influence weights on this method's forget loss (InfluenceWeighting)."}
    )

    # TrainingArguments defaults changed for unlearning (the TOFU reference recipe).
    learning_rate: float = field(default=1e-5, metadata={"help": "Initial AdamW learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    num_train_epochs: float = field(default=10.0, metadata={"help": "Number of passes over the forget set."})
    logging_steps: float = field(default=10, metadata={"help": "Log every X update steps."})
    report_to: None | str | list[str] = field(  # noqa: RUF036 (HfArgumentParser reads only this order)
        default="none", metadata={"help": "Integrations to report to ('none', 'tensorboard', 'wandb', ...)."}
    )
    hub_private_repo: bool | None = field(
        default=True, metadata={"help": "Create the Hub repository private (the default here; False: public)."}
    )
    hub_strategy: str = field(
        default="end", metadata={"help": "When to push: 'end' (push_to_hub()/save_model() only), 'every_save', ..."}
    )
    dataloader_pin_memory: bool | None = field(
        default=None, metadata={"help": "Pin batches in memory; None: only when an accelerator is present."}
    )
    # The collator needs the `forget`/`retain`/`index` keys that the model's signature does not list.
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Must stay False: unlearning batches are nested forget/retain dicts."}
    )

    def __post_init__(self):
        if self.retain_loss not in RETAIN_LOSSES:
            raise ValueError(f"retain_loss={self.retain_loss!r} is not one of {RETAIN_LOSSES}.")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference={self.reference!r} is not one of {REFERENCES}.")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable={self.trainable!r} is not one of {TRAINABLE}.")
        layer_options = (self.trainable_patterns, self.trainable_last_layers, self.trainable_layers_at_depth)
        if self.trainable == "patterns" and all(option is None for option in layer_options):
            raise ValueError("trainable='patterns' needs trainable_patterns and/or a layer shorthand.")
        if self.trainable != "patterns" and any(option is not None for option in layer_options):
            raise ValueError(
                "trainable_patterns / trainable_last_layers / trainable_layers_at_depth need trainable='patterns'."
            )
        if self.influence_weighting is not None:  # checked now, kept as a plain mapping (serialisable args)
            self.influence_weighting = InfluenceWeighting.from_value(self.influence_weighting).to_dict()
        check_numeric_fields(self)
        if self.retain_loss == "none" and self.retain_loss_weight is not None:
            raise ValueError(
                f"retain_loss_weight={self.retain_loss_weight} has no effect with retain_loss='none': set "
                "retain_loss ('nll' or 'kl') to use a retain term, or drop retain_loss_weight."
            )
        if self.retain_loss != "none" and self.retain_loss_weight is None:
            self.retain_loss_weight = 1.0
        if self.retain_loss_weight is not None and self.retain_loss_weight < 0:
            raise ValueError(f"retain_loss_weight must be >= 0, got {self.retain_loss_weight}.")
        check_training_numbers(self)
        if self.max_steps == 0:
            raise ValueError("max_steps=0 would train nothing: set max_steps >= 1, or -1 to train num_train_epochs.")
        if self.max_steps < 0 and self.num_train_epochs <= 0:
            raise ValueError(
                f"num_train_epochs={self.num_train_epochs} would train nothing: set num_train_epochs > 0 or max_steps."
            )
        if self.max_grad_norm is None:
            raise TypeError("max_grad_norm=None is not a number: use 0 to turn gradient clipping off.")
        if self.remove_unused_columns:
            raise ValueError(
                "remove_unused_columns must be False for unlearning trainers (nested forget/retain batches)."
            )
        for name in ("dataset_kwargs", "model_init_kwargs"):  # JSON from the command line
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    setattr(self, name, json.loads(value))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{name} must be a dict or a JSON object, got {value!r} ({error.msg}).") from None
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a dict or a JSON object, got {value!r}.")
        check_report_to(self.report_to)
        if self.dataloader_pin_memory is None:
            self.dataloader_pin_memory = has_accelerator()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator():
            # Under torchrun / accelerate launch on CPUs, accelerate joins the process group only when told to use the
            # CPU; without it every process would train its own copy on its own batches (the CLI does the same).
            self.use_cpu = True
        super().__post_init__()

    def set_push_to_hub(
        self,
        model_id: str,
        strategy: str = "end",
        token: str | None = None,
        private_repo: bool | None = True,
        always_push: bool = False,
        revision: str | None = None,
    ):
        """`TrainingArguments.set_push_to_hub` with this config's defaults: a private repository, one push at the end."""
        return super().set_push_to_hub(
            model_id,
            strategy=strategy,
            token=token,
            private_repo=private_repo,
            always_push=always_push,
            revision=revision,
        )
