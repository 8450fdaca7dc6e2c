"""Gradient ascent: maximise the forget set's NLL."""

from __future__ import annotations

import torch

from .base_trainer import UnlearnTrainer
from .step import token_mean_of_sums

__all__ = ["GATrainer", "ga_loss"]


def ga_loss(
    nll: torch.Tensor,
    num_tokens: torch.Tensor,
    weights: torch.Tensor | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """L_GA = −CE(F): minus the token-mean NLL over every labelled token (HF `outputs.loss`, negated).

    With influence weights ŵ (IMU): L = −Σ_i ŵ_i ℓ̄_i / Σ_i ŵ_i, ℓ̄_i the token-mean NLL of sequence i
    (`docs/methods.md#influence-weighting`).

    Args:
        nll: `(B,)` summed NLL of each forget sequence's labelled tokens.
        num_tokens: `(B,)` number of labelled tokens of each sequence.
        weights: `(B,)` ŵ_i ≥ 0, or None.
        num_items_in_batch: the mean's denominator over the whole optimizer step (its labelled tokens, or Σ ŵ with
            weights), so that the micro-batch gives its share; None: this batch's own.
    """
    return -token_mean_of_sums(nll, num_tokens, weights, num_items_in_batch)


class GATrainer(UnlearnTrainer):
    """Gradient ascent on the forget set (Jang et al., 2022, "Knowledge Unlearning for Mitigating Privacy Risks in
    Language Models", arXiv:2210.01504).

    Logs `forget_nll` (token-mean NLL of the forget batch) and, with a retain term, `retain_nll` / `retain_kl`.

    Example:
    ```python
    >>> from hf_unlearn import GAConfig, GATrainer
    >>> trainer = GATrainer(model, GAConfig(output_dir="ga", max_steps=10), forget_dataset=forget)
    >>> trainer.train()
    ```
    """

    def forget_loss(self, model, inputs):
        batch = self.forget_forward(model, inputs)
        return ga_loss(batch.nll, batch.num_tokens, batch.weights, batch.num_items("token"))
