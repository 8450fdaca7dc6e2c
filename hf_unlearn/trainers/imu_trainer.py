"""IMU: gradient ascent reweighted per forget sample by its influence on the forget loss, estimated on the LM head."""

from __future__ import annotations

import torch

from .base_trainer import UnlearnTrainer
from .step import normalized_sum

__all__ = ["IMUTrainer", "imu_loss"]


def imu_loss(
    mean_nll: torch.Tensor, weights: torch.Tensor, num_items_in_batch: float | torch.Tensor | None = None
) -> torch.Tensor:
    """L_IMU = −Σ_i ŵ_i ℓ_i / Σ_i ŵ_i (IMU paper eq. 6, `docs/methods.md#imu`): GA's loss with influence weights.

    Dividing by the weight sum rescales the weights of the step's Df⁺ members to average 1, so learning rates compare
    with GA's; a step without a positive-weight sample gives 0 (only possible when ν > 0 draws from all of Df).

    Args:
        mean_nll: `(B,)` token-mean NLL ℓ_i of each forget sequence.
        weights: `(B,)` ŵ_i ≥ 0.
        num_items_in_batch: Σ ŵ over the whole optimizer step; None: this batch's own.
    """
    return -normalized_sum(mean_nll, weights, num_items_in_batch)


class IMUTrainer(UnlearnTrainer):
    """IMU (Influence-guided Machine Unlearning, arXiv:2508.01620), for causal LMs: removal scores Δ_i on the LM head
    (`hf_unlearn.influence`), weights ŵ_i = ψ(max(0, Δ_i)) normalised over Df⁺, and the weighted ascent loss, plus
    the authors' optional L1 penalty on the head.

    With ν = 0 (default) the scores are computed once, before the first step, and only samples with positive weight
    are drawn. With `trainable="head"` (paper) every other parameter is frozen and tied input embeddings are untied
    first, so they stay exactly as they were. Scores and weights are written to `output_dir/influence_scores.safetensors`
    (indices only, never text) and into every checkpoint, so a resumed run continues with the same weights
    (`hf_unlearn.reporting.plot_influence_weights` draws their histogram). Logs `forget_nll`,
    `influence/positive_fraction`, `influence/kept` and the retain term.

    Example:
    ```python
    >>> from hf_unlearn import IMUConfig, IMUTrainer
    >>> args = IMUConfig(output_dir="imu", influence_weighting={"psi": "sqrt"}, learning_rate=1e-4, num_train_epochs=5)
    >>> IMUTrainer(model, args, forget_dataset=forget).train()
    ```
    """

    def forget_loss(self, model, inputs):
        batch = self.forget_forward(model, inputs)
        return imu_loss(batch.mean_nll, batch.weights, batch.num_items("sequence"))

    def regularizer(self, model):
        if self.args.head_l1_weight <= 0:
            return None
        return self.args.head_l1_weight * sum(p.abs().sum() for p in self.head_parameters())
