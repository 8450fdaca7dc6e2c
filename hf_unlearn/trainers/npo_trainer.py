"""Negative preference optimisation: a bounded, reference-anchored alternative to gradient ascent."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base_trainer import UnlearnTrainer
from .step import normalized_sum

__all__ = ["NPOTrainer", "npo_loss"]


def npo_loss(
    policy_nll: torch.Tensor,
    ref_nll: torch.Tensor,
    beta: float,
    weights: torch.Tensor | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """L_NPO = −(2/β)·mean_i log σ(β(ℓ_θ,i − ℓ_ref,i)) (Zhang et al., 2024, eq. 3 with log π = −ℓ); with influence
    weights ŵ the mean is Σ_i ŵ_i (·) / Σ_i ŵ_i (IMU-NPO).

    Args:
        policy_nll: `(B,)` summed answer NLL of each forget sequence under π_θ.
        ref_nll: `(B,)` the same under the frozen initial model π_ref.
        weights: `(B,)` ŵ_i ≥ 0, or None.
        num_items_in_batch: the mean's denominator over the whole optimizer step (its forget sequences, or Σ ŵ);
            None: this batch's own.
    """
    return -(2.0 / beta) * normalized_sum(F.logsigmoid(beta * (policy_nll - ref_nll)), weights, num_items_in_batch)


class NPOTrainer(UnlearnTrainer):
    """NPO (Zhang, Lin, Bai, Mei, 2024, "Negative Preference Optimization: From Catastrophic Collapse to Effective
    Unlearning", arXiv:2404.05868).

    π_ref's forget NLLs are precomputed once before training by default (`reference="precomputed"`); `"live"` runs
    the frozen model on every batch instead, with the same loss. Logs `forget_nll` (token mean), `log_ratio`
    (mean ℓ_ref − ℓ_θ, i.e. log π_θ/π_ref per sequence) and the retain term.

    Example:
    ```python
    >>> from hf_unlearn import NPOConfig, NPOTrainer
    >>> args = NPOConfig(output_dir="npo", beta=0.1, max_steps=10)
    >>> NPOTrainer(model, args, forget_dataset=forget, retain_dataset=retain).train()
    ```
    """

    needs_reference_nll = True

    def forget_loss(self, model, inputs):
        batch = self.forget_forward(model, inputs)
        self.record("log_ratio", batch.ref_nll - batch.nll.detach())
        return npo_loss(batch.nll, batch.ref_nll, self.args.beta, batch.weights, batch.num_items("sequence"))
