"""ME+GD: push the forget answers' next-token distributions towards uniform, descend on the retain set."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base_trainer import UnlearnTrainer
from .token_terms import answer_positions, token_mean

__all__ = ["MEGDTrainer", "me_loss"]


def me_loss(
    logits: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """L_ME = (1/N)·Σ_{t∈A} KL(U ‖ π_θ(·|t)) = (1/N)·Σ_{t∈A} (−log V − (1/V)Σ_v log π_θ(v|t)), U uniform on the V
    tokens (Yuan et al., "A Closer Look at Machine Unlearning for Large Language Models", arXiv:2410.08109).

    Args:
        logits: `(B, T, V)` the scores at each position; mask: `(B, T)` the labelled positions A.
        weights: `(B,)` influence weights ŵ_i, or None.
        num_items_in_batch: N, the step's labelled forget tokens (Σ ŵ with weights); None: this batch's own.
    """
    logps = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    kl = -math.log(logits.shape[-1]) - logps.mean(-1)  # (B, T)
    return token_mean(kl, mask, weights, num_items_in_batch)


class MEGDTrainer(UnlearnTrainer):
    """ME+GD (Yuan et al., "A Closer Look at Machine Unlearning for Large Language Models", arXiv:2410.08109; the
    paper itself is not verified here, the loss follows its authors' code). No reference model.

    The ME term covers the labelled answer positions (the authors' code also covers the question and the padding).
    Logs `forget_nll` and the retain term.

    Example:
    ```python
    >>> from hf_unlearn import MEGDConfig, MEGDTrainer
    >>> args = MEGDConfig(output_dir="megd", max_steps=10)
    >>> MEGDTrainer(model, args, forget_dataset=forget, retain_dataset=retain).train()
    ```
    """

    def forget_loss(self, model, inputs):
        batch = self.forget_forward(model, inputs)
        logits, _, mask = answer_positions(batch.logits, inputs["forget"]["labels"])
        return self.args.forget_loss_weight * me_loss(logits, mask, batch.weights, batch.num_items("token"))
