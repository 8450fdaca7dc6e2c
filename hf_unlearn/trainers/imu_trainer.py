"""IMU: gradient ascent reweighted per forget sample by its influence on the forget loss, estimated on the LM head."""

from __future__ import annotations

import torch

from .ga_trainer import GATrainer
from .influence_weighting import weighted_mean

__all__ = ["IMUTrainer", "imu_loss"]


def imu_loss(mean_nll: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L_IMU = −Σ_i ŵ_i ℓ_i / Σ_i ŵ_i over the micro-batch (IMU paper eq. 6, `docs/methods.md#imu`): GA's loss with
    influence weights.

    Dividing by the batch's weight sum rescales the weights of its Df⁺ members to average 1, so learning rates compare
    with GA's; a batch without a positive-weight sample gives 0 (only possible when ν > 0 draws from all of Df).

    Args:
        mean_nll: `(B,)` token-mean NLL ℓ_i of each forget sequence.
        weights: `(B,)` ŵ_i ≥ 0.
    """
    return -weighted_mean(mean_nll, weights)


class IMUTrainer(GATrainer):
    """IMU (Influence-guided Machine Unlearning, arXiv:2508.01620), for causal LMs: removal scores Δ_i on the LM head
    (`hf_unlearn.influence`), weights ŵ_i = ψ(max(0, Δ_i)) normalised over Df⁺, and the weighted ascent loss: GA with
    the config's `influence_weighting` (`hf_unlearn.trainers.influence_weighting`), plus the authors' optional L1
    penalty on the head.

    With ν = 0 (default) the scores are computed once, before the first step, and only samples with positive weight
    are drawn. With `trainable="head"` (paper) every other parameter is frozen and tied input embeddings are untied
    first, so they stay exactly as they were. Scores and weights are written to `output_dir/influence_scores.safetensors`
    (indices only, never text) and into every checkpoint, so a resumed run continues with the same weights
    (`hf_unlearn.reporting.plot_influence_weights` draws their histogram). Logs `forget_nll`,
    `influence/positive_fraction`, `influence/kept` and the retain term.

    Example:
    ```python
    >>> from hf_unlearn import IMUConfig, IMUTrainer
    >>> args = IMUConfig(output_dir="imu", psi="sqrt", trainable="head", learning_rate=1e-4, num_train_epochs=5)
    >>> IMUTrainer(model, args, forget_dataset=forget).train()
    ```
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.args.head_l1_weight <= 0:
            return result
        loss, outputs = result if return_outputs else (result, None)
        loss = self.check_finite(loss + self.args.head_l1_weight * sum(p.abs().sum() for p in self.head_parameters()))
        return (loss, outputs) if return_outputs else loss
