"""Influence weighting as an option of every forget loss: IMU's per-sample weights ŵ_i on GA, GradDiff, NPO or SimNPO
(`docs/methods.md#influence-weighting`, `docs/influence.md`).

The scores Δ_i always come from the LM head (the classifier-level approximation); the weights then scale each
forget sample's term of whichever loss the method uses, `Σ_i ŵ_i L_i / Σ_i ŵ_i` over the micro-batch. IMU is GA with
this weighting; IMU-NPO and IMU-SimNPO are NPO and SimNPO with it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from ..influence import (
    CURVATURES,
    INFLUENCE_FILE_NAME,
    PSI_CHOICES,
    InfluenceArguments,
    compute_influence,
    influence_weights,
    load_influence,
    save_influence,
)

if TYPE_CHECKING:
    from .base_trainer import UnlearnTrainer

__all__ = ["InfluenceWeighter", "InfluenceWeighting", "weighted_mean"]

logger = logging.getLogger(__name__)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Σ_i w_i v_i / Σ_i w_i over the micro-batch (the plain mean without weights).

    Dividing by the batch's weight sum keeps a loss on the scale of its unweighted form, so learning rates compare
    across methods; a batch whose weights are all zero gives 0 (only possible when weights are recomputed during
    training, ν > 0, so zero-weight samples are drawn too).
    """
    if weights is None:
        return values.mean()
    total = weights.sum()
    if total <= 0:
        return (values * 0.0).sum()
    return (weights * values).sum() / total


@dataclass
class InfluenceWeighting:
    """The `influence_weighting` option of every unlearning config (a mapping with these keys).

    Parameters:
        psi (`str`, defaults to `"sqrt"`):
            ψ applied to the positive scores before normalisation: `"none"`, `"sqrt"` (IMU paper), `"tanh"`, `"exp"`.
        top_ratio (`float`, defaults to `1.0`):
            r: keep only the top-r fraction of the forget set by score.
        update_epochs (`int`, defaults to `0`):
            ν: recompute the scores from the current model every ν epochs; 0 computes them once before the first
            step and draws only samples with positive weight.
        curvature (`str`, defaults to `"fisher_diag"`):
            Curvature of the head: `"fisher_diag"` (paper), `"exact"` (tiny heads), `"kfac"`.
        damping (`float`, defaults to `0.1`):
            λ added to the curvature, relative to its mean diagonal when `relative_damping`.
        relative_damping (`bool`, defaults to `True`):
            Whether λ is relative to the curvature's mean diagonal (else absolute).
        batch_size (`int`, defaults to `8`):
            Forget samples per forward pass of the influence computation.
        clip_quantile (`float` or `None`, defaults to `None`):
            Cap the weights at this quantile (off in the paper).
        permutation_seed (`int` or `None`, defaults to `None`):
            Control: permute the weights across forget samples with this seed. Equal results mean the scores
            carry no information about *which* samples matter.
        uniform (`bool`, defaults to `False`):
            Control: weight 1 for every kept sample (the same top-r subset of Df⁺), so the effect of *how much*
            each sample weighs is separable from *which* samples are kept.
    """

    psi: str = field(default="sqrt", metadata={"help": f"ψ on positive influence scores: one of {PSI_CHOICES}."})
    top_ratio: float = field(default=1.0, metadata={"help": "r: keep the top-r fraction of samples by score."})
    update_epochs: int = field(default=0, metadata={"help": "ν: recompute scores every ν epochs (0: once)."})
    curvature: str = field(default="fisher_diag", metadata={"help": f"Head curvature: one of {CURVATURES}."})
    damping: float = field(default=0.1, metadata={"help": "λ: damping of the head curvature."})
    relative_damping: bool = field(default=True, metadata={"help": "λ relative to the mean curvature diagonal."})
    batch_size: int = field(default=8, metadata={"help": "Samples per influence forward pass."})
    clip_quantile: float | None = field(default=None, metadata={"help": "Clip weights at this quantile; None: off."})
    permutation_seed: int | None = field(default=None, metadata={"help": "Control: permute the weights."})
    uniform: bool = field(default=False, metadata={"help": "Control: weight 1 on every kept sample."})

    def __post_init__(self) -> None:
        if self.psi not in PSI_CHOICES:
            raise ValueError(f"influence_weighting.psi={self.psi!r} is not one of {PSI_CHOICES}.")
        if not 0 < self.top_ratio <= 1:
            raise ValueError(f"influence_weighting.top_ratio must be in (0, 1], got {self.top_ratio}.")
        if self.update_epochs < 0:
            raise ValueError(f"influence_weighting.update_epochs must be >= 0, got {self.update_epochs}.")
        if self.curvature not in CURVATURES:
            raise ValueError(f"influence_weighting.curvature={self.curvature!r} is not one of {CURVATURES}.")
        if self.clip_quantile is not None and not 0 < self.clip_quantile <= 1:
            raise ValueError(f"influence_weighting.clip_quantile must be in (0, 1] or None, got {self.clip_quantile}.")
        if self.batch_size < 1:
            raise ValueError(f"influence_weighting.batch_size must be >= 1, got {self.batch_size}.")
        if self.uniform and self.permutation_seed is not None:
            raise ValueError("influence_weighting: choose one control, uniform or permutation_seed, not both.")

    @classmethod
    def from_value(cls, value: InfluenceWeighting | dict[str, Any] | None) -> InfluenceWeighting | None:
        """From the config's mapping (unknown keys named), an instance, or None (no weighting)."""
        if value is None or isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"influence_weighting must be a mapping of {cls.field_names()}, got {value!r}.")
        unknown = sorted(set(value) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"influence_weighting: unknown keys {unknown}; the keys are {cls.field_names()}.")
        return cls(**value)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class InfluenceWeighter:
    """Scores and weights of one trainer's forget set: computed (or reloaded from a checkpoint) before training,
    recomputed every ν epochs, saved next to every checkpoint (indices and numbers only, never text)."""

    def __init__(self, trainer: UnlearnTrainer, weighting: InfluenceWeighting):
        self.trainer = trainer
        self.weighting = weighting
        self.scores: torch.Tensor | None = None
        self.weights: torch.Tensor | None = None
        self.history: list[dict[str, float]] = []
        trainer.add_callback(_InfluenceCallback(self))

    @property
    def influence_args(self) -> InfluenceArguments:
        w, trainer = self.weighting, self.trainer
        return InfluenceArguments(
            curvature=w.curvature,
            damping=w.damping,
            relative_damping=w.relative_damping,
            batch_size=w.batch_size,
            progress_bar=trainer.is_world_process_zero() and not trainer.args.disable_tqdm,
        )

    def prepare(self, resume_from_checkpoint: str | bool | None) -> None:
        """Before training: reload the weights saved with the checkpoint being resumed, else compute them."""
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = get_last_checkpoint(self.trainer.args.output_dir)
        saved = Path(checkpoint) / INFLUENCE_FILE_NAME if checkpoint else None
        if saved is not None and saved.is_file():
            logger.info("Resuming with the influence weights saved in %s.", saved)
            self.set_scores(load_influence(saved, self.influence_args).scores)
        else:
            self.update()

    def update(self) -> None:
        """Scores from the current model over the whole forget set (sharded across processes), then weights."""
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        self.set_scores(compute_influence(model, self.trainer.forget_dataset, self.influence_args).scores)

    def set_scores(self, scores: torch.Tensor) -> None:
        w = self.weighting
        weights = influence_weights(scores, w.psi, w.top_ratio, w.clip_quantile)
        if w.uniform:
            weights = (weights > 0).to(weights.dtype)
        if w.permutation_seed is not None:
            generator = torch.Generator().manual_seed(w.permutation_seed)
            weights = weights[torch.randperm(len(weights), generator=generator)]
        self.scores, self.weights = scores.float(), weights.float()
        kept = int((weights > 0).sum())
        summary = {
            "positive_fraction": float((scores > 0).float().mean()),
            "kept": kept,
            "weight_max": float(weights.max()),
            "step": self.trainer.state.global_step,
        }
        self.history.append(summary)
        logger.info(
            "Influence weights: %d of %d forget samples kept (%.0f%% positive).",
            kept,
            len(scores),
            100 * summary["positive_fraction"],
        )
        self.trainer.record("influence/positive_fraction", summary["positive_fraction"])
        self.trainer.record("influence/kept", kept)
        if w.update_epochs == 0:
            self.trainer.train_dataset.indices = torch.nonzero(weights > 0).flatten().tolist()
        if self.trainer.is_world_process_zero():
            self.save(self.trainer.args.output_dir)

    def batch_weights(self, inputs: dict[str, Any], device: torch.device) -> torch.Tensor:
        """ŵ_i of the forget samples in a batch, `(B,)`."""
        return self.weights[inputs["index"].cpu()].to(device)

    def save(self, folder: str | os.PathLike) -> None:
        save_influence(Path(folder) / INFLUENCE_FILE_NAME, self.scores, self.influence_args, weights=self.weights)


class _InfluenceCallback(TrainerCallback):
    """Recomputes the weights every ν epochs and stores them next to each checkpoint."""

    def __init__(self, weighter: InfluenceWeighter):
        self.weighter = weighter

    def on_epoch_begin(self, args, state, control, **kwargs):
        every = self.weighter.weighting.update_epochs
        epoch = round(state.epoch or 0)
        if every and epoch > 0 and epoch % every == 0:
            self.weighter.update()

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if self.weighter.trainer.is_world_process_zero() and folder.is_dir():
            self.weighter.save(folder)
