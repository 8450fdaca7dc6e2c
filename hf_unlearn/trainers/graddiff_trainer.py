"""Gradient difference: ascend on the forget batch, descend on the retain batch."""

from __future__ import annotations

import torch

from .base_trainer import UnlearnTrainer
from .ga_trainer import ga_loss

__all__ = ["GradDiffTrainer", "graddiff_loss"]


def graddiff_loss(
    forget_nll: torch.Tensor,
    forget_tokens: torch.Tensor,
    forget_loss_weight: float,
    weights: torch.Tensor | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """The forget part of L = γ·(−CE(F)) + α·Ret(R): γ times GA's loss (influence-weighted with `weights`). The retain
    part α·Ret(R) is the trainer's `retain_loss` (`docs/methods.md#retain-terms`).

    Args:
        forget_nll: `(B,)` summed NLL of each forget sequence; forget_tokens: `(B,)` their labelled-token counts.
        forget_loss_weight: γ.
        weights: `(B,)` ŵ_i ≥ 0, or None.
        num_items_in_batch: as in `ga_loss`.
    """
    return forget_loss_weight * ga_loss(forget_nll, forget_tokens, weights, num_items_in_batch)


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

    def forget_loss(self, model, inputs):
        batch = self.forget_forward(model, inputs)
        return graddiff_loss(
            batch.nll, batch.num_tokens, self.args.forget_loss_weight, batch.weights, batch.num_items("token")
        )
