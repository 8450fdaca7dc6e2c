"""Negative preference optimisation: a bounded, reference-anchored alternative to gradient ascent."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..utils import sequence_nll
from .base_trainer import UnlearnTrainer
from .influence_weighting import weighted_mean

__all__ = ["NPOTrainer", "npo_loss"]


def npo_loss(
    policy_nll: torch.Tensor, ref_nll: torch.Tensor, beta: float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """L_NPO = −(2/β)·mean_i log σ(β(ℓ_θ,i − ℓ_ref,i)) (Zhang et al., 2024, eq. 3 with log π = −ℓ); with influence
    weights ŵ the mean is Σ_i ŵ_i (·) / Σ_i ŵ_i (IMU-NPO).

    Args:
        policy_nll: `(B,)` summed answer NLL of each forget sequence under π_θ.
        ref_nll: `(B,)` the same under the frozen initial model π_ref.
        weights: `(B,)` ŵ_i ≥ 0, or None.
    """
    return -(2.0 / beta) * weighted_mean(F.logsigmoid(beta * (policy_nll - ref_nll)), weights)


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

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        forget = inputs["forget"]
        outputs = model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"])
        nll, num_tokens = sequence_nll(outputs.logits, forget["labels"])  # (B,), (B,)
        ref_nll = self.reference_nll(model, inputs)  # (B,)
        loss = self.check_finite(
            npo_loss(nll, ref_nll, self.args.beta, self.forget_weights(inputs, nll.device))
            + self.retain_term(model, inputs)
        )
        self.record("forget_nll", nll.sum() / num_tokens.sum())
        self.record("log_ratio", ref_nll - nll.detach())
        return (loss, outputs) if return_outputs else loss
