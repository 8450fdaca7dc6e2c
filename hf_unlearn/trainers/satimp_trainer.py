"""SatImp: gradient ascent with token weights that favour tokens the model predicts well but not yet perfectly."""

from __future__ import annotations

import torch

from ..utils import token_logprobs
from .base_trainer import UnlearnTrainer
from .token_terms import token_mean

__all__ = ["SatImpTrainer", "satimp_loss"]


def satimp_loss(
    logps: torch.Tensor,
    mask: torch.Tensor,
    beta1: float,
    beta2: float,
    weights: torch.Tensor | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """L_SatImp = −(1/N)·Σ_{t∈A} w_t ℓ_t, w_t = sg(p_t^{β₁}(1 − p_t)^{β₂}), ℓ_t = −log p_t (Yang et al., 2025).

    Args:
        logps: `(B, T)` log p_t of each labelled token (anything where `mask` is False).
        mask: `(B, T)` the labelled positions A.
        beta1, beta2: β₁, β₂ ≥ 0.
        weights: `(B,)` influence weights ŵ_i, or None.
        num_items_in_batch: N, the step's labelled forget tokens (Σ ŵ with weights); None: this batch's own.
    """
    p = logps.detach().exp()  # (B, T)
    token_weights = p.pow(beta1) * (1.0 - p).pow(beta2)  # (B, T) sg(w_t)
    return token_mean(token_weights * logps, mask, weights, num_items_in_batch)  # −w·ℓ = w·log p


class SatImpTrainer(UnlearnTrainer):
    """SatImp (Yang et al., "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning", ICML 2025). No
    reference model.

    Logs `forget_nll` (token mean of the forget batch) and the retain term.

    Example:
    ```python
    >>> from hf_unlearn import SatImpConfig, SatImpTrainer
    >>> args = SatImpConfig(output_dir="satimp", beta1=5.0, beta2=1.0, max_steps=10)
    >>> SatImpTrainer(model, args, forget_dataset=forget, retain_dataset=retain).train()
    ```
    """

    def forget_loss(self, model, inputs):
        batch = self.forget_forward(model, inputs)
        logps, mask = token_logprobs(batch.logits, inputs["forget"]["labels"])  # (B, T-1)
        args = self.args
        loss = satimp_loss(logps, mask, args.beta1, args.beta2, batch.weights, batch.num_items("token"))
        return args.forget_loss_weight * loss
