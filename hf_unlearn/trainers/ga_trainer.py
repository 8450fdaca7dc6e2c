"""Gradient ascent: maximise the forget set's NLL."""

from __future__ import annotations

import torch

from ..utils import sequence_nll
from .base_trainer import UnlearnTrainer
from .influence_weighting import weighted_mean

__all__ = ["GATrainer", "ga_loss"]


def ga_loss(nll: torch.Tensor, num_tokens: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """L_GA = −CE(F): minus the token-mean NLL over every labelled token of the micro-batch (HF `outputs.loss`).

    With influence weights ŵ (IMU): L = −Σ_i ŵ_i ℓ̄_i / Σ_i ŵ_i, ℓ̄_i the token-mean NLL of sequence i
    (`docs/methods.md#influence-weighting`).

    Args:
        nll: `(B,)` summed NLL of each forget sequence's labelled tokens.
        num_tokens: `(B,)` number of labelled tokens of each sequence.
        weights: `(B,)` ŵ_i ≥ 0, or None.
    """
    if weights is not None:
        return -weighted_mean(nll / num_tokens, weights)
    return -nll.sum() / num_tokens.sum()


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

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        forget = inputs["forget"]
        outputs = model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"])
        nll, num_tokens = sequence_nll(outputs.logits, forget["labels"])  # (B,), (B,)
        forget_loss = ga_loss(nll, num_tokens, self.forget_weights(inputs, nll.device))
        loss = self.check_finite(forget_loss + self.retain_term(model, inputs))
        self.record("forget_nll", nll.sum() / num_tokens.sum())
        return (loss, outputs) if return_outputs else loss
