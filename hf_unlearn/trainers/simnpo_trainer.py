"""SimNPO: NPO without a reference model, on length-normalised likelihoods."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..utils import sequence_nll
from .base_trainer import UnlearnTrainer
from .influence_weighting import weighted_mean

__all__ = ["SimNPOTrainer", "simnpo_loss"]


def simnpo_loss(
    mean_nll: torch.Tensor, beta: float, delta: float, coefficient: float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """L_SimNPO = −(2/β)·mean_i log σ(β(ℓ̄_θ,i − δ))·c (Fan et al., 2024, eq. 4); with influence weights ŵ the mean
    is Σ_i ŵ_i (·) / Σ_i ŵ_i (IMU-SimNPO).

    Args:
        mean_nll: `(B,)` length-normalised answer NLL ℓ̄ (the count includes the end-of-turn token).
        weights: `(B,)` ŵ_i ≥ 0, or None.
    """
    return -(2.0 / beta) * weighted_mean(F.logsigmoid(beta * (mean_nll - delta)), weights) * coefficient


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

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        forget = inputs["forget"]
        outputs = model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"])
        nll, num_tokens = sequence_nll(outputs.logits, forget["labels"])  # (B,), (B,)
        weights = self.forget_weights(inputs, nll.device)
        forget_loss = simnpo_loss(
            nll / num_tokens, self.args.beta, self.args.delta, self.args.forget_loss_coefficient, weights
        )
        loss = self.check_finite(forget_loss + self.retain_term(model, inputs))
        self.record("forget_nll", nll.sum() / num_tokens.sum())
        return (loss, outputs) if return_outputs else loss
