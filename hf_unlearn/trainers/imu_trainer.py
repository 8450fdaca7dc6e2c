"""IMU: gradient ascent reweighted per forget sample by its influence on the forget loss, estimated on the LM head."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from ..influence import (
    INFLUENCE_FILE_NAME,
    InfluenceArguments,
    compute_influence,
    influence_weights,
    load_influence,
    save_influence,
)
from ..utils import sequence_nll
from .base_trainer import UnlearnTrainer

__all__ = ["IMUTrainer", "imu_loss"]

logger = logging.getLogger(__name__)


def imu_loss(mean_nll: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L_IMU = −Σ_i ŵ_i ℓ_i / Σ_i ŵ_i over the micro-batch (IMU paper eq. 6, `docs/methods.md#imu`).

    Dividing by the batch's weight sum rescales the weights of its Df⁺ members to average 1, so learning rates compare
    with GA's; a batch without a positive-weight sample gives 0 (only possible when ν > 0 draws from all of Df).

    Args:
        mean_nll: `(B,)` token-mean NLL ℓ_i of each forget sequence.
        weights: `(B,)` ŵ_i ≥ 0.
    """
    total = weights.sum()
    if total <= 0:
        return (mean_nll * 0.0).sum()
    return -(weights * mean_nll).sum() / total


class _InfluenceCallback(TrainerCallback):
    """Recomputes the weights every ν epochs and stores them next to each checkpoint."""

    def __init__(self, trainer: IMUTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = round(state.epoch or 0)
        if args.influence_update_epochs and epoch > 0 and epoch % args.influence_update_epochs == 0:
            self.trainer.update_influence()

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if self.trainer.is_world_process_zero() and folder.is_dir():
            self.trainer.save_influence(folder)


class IMUTrainer(UnlearnTrainer):
    """IMU (Influence-guided Machine Unlearning, arXiv:2508.01620), for causal LMs: removal scores Δ_i on the LM head
    (`hf_unlearn.influence`), weights ŵ_i = ψ(max(0, Δ_i)) normalised over Df⁺, and the weighted ascent loss.

    With ν = 0 (default) the scores are computed once, before the first step, and only samples with positive weight
    are drawn. With `trainable="head"` (paper) every other parameter is frozen and tied input embeddings are untied
    first, so they stay exactly as they were. Scores and weights are written to `output_dir/influence_scores.safetensors`
    (indices only, never text) and into every checkpoint, so a resumed run continues with the same weights
    (`hf_unlearn.reporting.plot_influence_weights` draws their histogram). Logs `forget_nll`, `imu/positive_fraction`,
    `imu/kept` and the retain term.

    Example:
    ```python
    >>> from hf_unlearn import IMUConfig, IMUTrainer
    >>> args = IMUConfig(output_dir="imu", psi="sqrt", trainable="head", learning_rate=1e-4, num_train_epochs=5)
    >>> IMUTrainer(model, args, forget_dataset=forget).train()
    ```
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.scores: torch.Tensor | None = None
        self.sample_weights: torch.Tensor | None = None
        self.influence_history: list[dict[str, float]] = []
        self.add_callback(_InfluenceCallback(self))

    # ----- influence -------------------------------------------------------------------------------------------

    @property
    def influence_args(self) -> InfluenceArguments:
        return InfluenceArguments(
            curvature=self.args.influence_curvature,
            damping=self.args.influence_damping,
            relative_damping=self.args.influence_relative_damping,
            batch_size=self.args.influence_batch_size,
            progress_bar=self.is_world_process_zero() and not self.args.disable_tqdm,
        )

    def update_influence(self) -> None:
        """Scores from the current model over the whole forget set (sharded across processes), then weights."""
        model = self.accelerator.unwrap_model(self.model)
        result = compute_influence(model, self.forget_dataset, self.influence_args)
        self.set_influence(result.scores)

    def set_influence(self, scores: torch.Tensor) -> None:
        weights = influence_weights(scores, self.args.psi, self.args.top_ratio, self.args.weight_clip_quantile)
        if self.args.weight_permutation_seed is not None:
            generator = torch.Generator().manual_seed(self.args.weight_permutation_seed)
            weights = weights[torch.randperm(len(weights), generator=generator)]
        self.scores, self.sample_weights = scores.float(), weights.float()
        kept = int((weights > 0).sum())
        summary = {
            "positive_fraction": float((scores > 0).float().mean()),
            "kept": kept,
            "weight_max": float(weights.max()),
            "step": self.state.global_step,
        }
        self.influence_history.append(summary)
        logger.info(
            "IMU weights: %d of %d forget samples kept (%.0f%% positive).",
            kept,
            len(scores),
            100 * summary["positive_fraction"],
        )
        self.record("imu/positive_fraction", summary["positive_fraction"])
        self.record("imu/kept", kept)
        if self.args.influence_update_epochs == 0:
            self.train_dataset.indices = torch.nonzero(weights > 0).flatten().tolist()
        if self.is_world_process_zero():
            self.save_influence(self.args.output_dir)

    def save_influence(self, folder: str | os.PathLike) -> None:
        save_influence(
            Path(folder) / INFLUENCE_FILE_NAME, self.scores, self.influence_args, weights=self.sample_weights
        )

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any):
        """Compute (or, when resuming, reload) the weights, then train as usual."""
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = get_last_checkpoint(self.args.output_dir)
        saved = Path(checkpoint) / INFLUENCE_FILE_NAME if checkpoint else None
        if saved is not None and saved.is_file():
            record = load_influence(saved, self.influence_args)
            logger.info("Resuming with the IMU weights saved in %s.", saved)
            self.set_influence(record.scores)
        else:
            self.update_influence()
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    # ----- loss ------------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        forget = inputs["forget"]
        outputs = model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"])
        nll, num_tokens = sequence_nll(outputs.logits, forget["labels"])  # (B,), (B,)
        weights = self.sample_weights[inputs["index"].cpu()].to(nll.device)  # (B,)
        loss = imu_loss(nll / num_tokens, weights) + self.retain_term(model, inputs)
        if self.args.head_l1_weight > 0:
            loss = loss + self.args.head_l1_weight * sum(p.abs().sum() for p in self.head_parameters())
        loss = self.check_finite(loss)
        self.record("forget_nll", nll.sum() / num_tokens.sum())
        return (loss, outputs) if return_outputs else loss
