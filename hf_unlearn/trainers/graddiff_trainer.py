"""Gradient difference: ascend on the forget batch, descend on the retain batch."""

from __future__ import annotations

import torch

from ..utils import sequence_nll
from .base_trainer import UnlearnTrainer
from .ga_trainer import ga_loss

__all__ = ["GradDiffTrainer", "graddiff_loss"]


def graddiff_loss(
    forget_nll: torch.Tensor,
    forget_tokens: torch.Tensor,
    retain_term: torch.Tensor,
    forget_loss_weight: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """L = γ·(−CE(F)) + α·Ret(R); `retain_term` arrives already weighted by α; the forget part is GA's loss
    (influence-weighted with `weights`).

    Args:
        forget_nll: `(B,)` summed NLL of each forget sequence; forget_tokens: `(B,)` their labelled-token counts.
        retain_term: scalar α·Ret(R).
        weights: `(B,)` ŵ_i ≥ 0, or None.
    """
    return forget_loss_weight * ga_loss(forget_nll, forget_tokens, weights) + retain_term


class GradDiffTrainer(UnlearnTrainer):
    """Gradient difference (Liu et al., 2022, "Continual Learning and Private Unlearning", arXiv:2203.12817; TOFU
    baseline, Maini et al., 2024, arXiv:2401.06121).

    Logs `forget_nll` and `retain_nll` (or `retain_kl`).

    Example:
    ```python
    >>> from hf_unlearn import GradDiffConfig, GradDiffTrainer
    >>> args = GradDiffConfig(output_dir="graddiff", max_steps=10)
    >>> GradDiffTrainer(model, args, forget_dataset=forget, retain_dataset=retain).train()
    ```
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        forget = inputs["forget"]
        outputs = model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"])
        nll, num_tokens = sequence_nll(outputs.logits, forget["labels"])  # (B,), (B,)
        weights = self.forget_weights(inputs, nll.device)
        loss = graddiff_loss(nll, num_tokens, self.retain_term(model, inputs), self.args.forget_loss_weight, weights)
        loss = self.check_finite(loss)
        self.record("forget_nll", nll.sum() / num_tokens.sum())
        return (loss, outputs) if return_outputs else loss
