"""SimNPO: NPO without a reference model, on length-normalised likelihoods."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base_trainer import UnlearnTrainer
from .step import normalized_sum

__all__ = ["SimNPOTrainer", "simnpo_loss"]


def simnpo_loss(
    mean_nll: torch.Tensor,
    beta: float,
    delta: float,
    coefficient: float,
    weights: torch.Tensor | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """L_SimNPO = −(2/β)·mean_i log σ(β(ℓ̄_θ,i − δ))·c (Fan et al., 2024, eq. 4); with influence weights ŵ the mean
    is Σ_i ŵ_i (·) / Σ_i ŵ_i (IMU-SimNPO).

    Args:
        mean_nll: `(B,)` length-normalised answer NLL ℓ̄ (the count includes the end-of-turn token).
        weights: `(B,)` ŵ_i ≥ 0, or None.
        num_items_in_batch: the mean's denominator over the whole optimizer step (its forget sequences, or Σ ŵ);
            None: this batch's own.
    """
    terms = F.logsigmoid(beta * (mean_nll - delta))  # (B,)
    return -(2.0 / beta) * normalized_sum(terms, weights, num_items_in_batch) * coefficient


class SimNPOTrainer(UnlearnTrainer):
    """SimNPO (Fan, Liu, Lin, Jia, Zhang, Mei, Liu, 2024, "Simplicity Prevails: Rethinking Negative Preference
    Optimization for LLM Unlearning", arXiv:2410.07163).

    Logs `forget_nll` (token mean over the batch) and the retain term.

    Example:
    ```python
    >>> from hf_unlearn import SimNPOConfig, SimNPOTrainer
    >>> args = SimNPOConfig(output_dir="simnpo", beta=4.5, forget_loss_coefficient=0.125, max_steps=10)
    >>> SimNPOTrainer(model, args, forget_dataset=forget, retain_dataset=retain).train()
    ```
    """

    def forget_loss(self, model, inputs):
        batch = self.forget_forward(model, inputs)
        args = self.args
        return simnpo_loss(
            batch.mean_nll,
            args.beta,
            args.delta,
            args.forget_loss_coefficient,
            batch.weights,
            batch.num_items("sequence"),
        )
