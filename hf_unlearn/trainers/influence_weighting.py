"""Influence weighting as an option of every forget loss: IMU's per-sample weights ŵ_i on GA, GradDiff, NPO or SimNPO
(`docs/methods.md#influence-weighting`, `docs/influence.md`).

The scores Δ_i always come from the LM head (the classifier-level approximation); the weights then scale each
forget sample's term of whichever loss the method uses, `Σ_i ŵ_i L_i / Σ_i ŵ_i` over the whole optimizer step
(`hf_unlearn.trainers.step`). IMU is GA with this weighting; IMU-NPO and IMU-SimNPO are NPO and SimNPO with it. The
settings are `hf_unlearn.influence.InfluenceWeighting`; this module holds their life inside a trainer.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from ..influence import (
    INFLUENCE_FILE_NAME,
    InfluenceArguments,
    InfluenceWeighting,
    compute_influence,
    influence_weights,
    load_influence,
    save_influence,
)

__all__ = ["InfluenceWeighter"]

logger = logging.getLogger(__name__)


class InfluenceWeighter:
    """Scores and weights of one trainer's forget set: computed (or reloaded from a checkpoint) before training,
    recomputed every ν epochs, saved next to every checkpoint (indices and numbers only, never text)."""

    def __init__(self, trainer: Trainer, weighting: InfluenceWeighting):
        """`trainer`: an `UnlearnTrainer` (its `forget_dataset`, `train_dataset.indices` and `record` are used)."""
        self.trainer = trainer
        self.weighting = weighting
        self.scores: torch.Tensor | None = None
        self.weights: torch.Tensor | None = None
        self.history: list[dict[str, float]] = []
        trainer.add_callback(_InfluenceCallback(self))

    @property
    def influence_args(self) -> InfluenceArguments:
        trainer = self.trainer
        return self.weighting.score_arguments(
            progress_bar=self.weighting.progress_bar
            and trainer.is_world_process_zero()
            and not trainer.args.disable_tqdm
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

    def batch_weights(self, index: torch.Tensor) -> torch.Tensor:
        """ŵ_i of the forget samples `index` (positions in the forget set), `(B,)` on `index`'s device."""
        return self.weights[index.cpu()].to(index.device)

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
