"""WGA: gradient ascent with each token weighted by the model's (detached) probability of it."""

from __future__ import annotations

import torch

from ..utils import token_logprobs
from .base_trainer import UnlearnTrainer
from .token_terms import token_mean

__all__ = ["WGATrainer", "wga_loss"]


def wga_loss(
    logps: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    weights: torch.Tensor | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """L_WGA = −(1/N)·Σ_{t∈A} sg(p_t^β)·ℓ_t with ℓ_t = −log p_t (Wang et al., 2025): tokens the model still
    predicts well get the largest ascent, tokens already forgotten (p_t → 0) stop pulling.

    Args:
        logps: `(B, T)` log p_t of each labelled token (anything where `mask` is False).
        mask: `(B, T)` the labelled positions A.
        beta: β ≥ 0.
        weights: `(B,)` influence weights ŵ_i, or None.
        num_items_in_batch: N, the step's labelled forget tokens (Σ ŵ with weights); None: this batch's own.
    """
    token_weights = (beta * logps.detach()).exp()  # (B, T) sg(p_t^β)
    return token_mean(token_weights * logps, mask, weights, num_items_in_batch)  # −w·ℓ = w·log p


class WGATrainer(UnlearnTrainer):
    """WGA (Wang et al., "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond", ICLR 2025).
    No reference model.

    Logs `forget_nll` (token mean of the forget batch) and the retain term.

    Example:
    ```python
    >>> from hf_unlearn import WGAConfig, WGATrainer
    >>> args = WGAConfig(output_dir="wga", beta=1.0, max_steps=10)
    >>> WGATrainer(model, args, forget_dataset=forget, retain_dataset=retain).train()
    ```
    """

    def forget_loss(self, model, inputs):
        batch = self.forget_forward(model, inputs)
        logps, mask = token_logprobs(batch.logits, inputs["forget"]["labels"])  # (B, T-1)
        loss = wga_loss(logps, mask, self.args.beta, batch.weights, batch.num_items("token"))
        return self.args.forget_loss_weight * loss
