"""UNDIAL: distil the frozen model's distribution with the labelled token's logit lowered."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base_trainer import UnlearnTrainer
from .token_terms import answer_positions, token_mean

__all__ = ["UNDIALTrainer", "undial_loss"]


def undial_loss(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    weights: torch.Tensor | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """L_UNDIAL = (1/N)·Σ_{t∈A} −Σ_v q_{t,v} log softmax(z_t)_v, q_t = softmax(z_t^ref − β·e_{y_t}) (Dong et al.,
    "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large Language Models", NAACL 2025).

    Args:
        logits: `(B, T, V)` z_t of the model; ref_logits: `(B, T, V)` z_t^ref of the frozen initial model.
        targets: `(B, T)` y_t (any id where `mask` is False); mask: `(B, T)` the labelled positions A.
        beta: β ≥ 0.
        weights: `(B,)` influence weights ŵ_i, or None.
        num_items_in_batch: N, the step's labelled forget tokens (Σ ŵ with weights); None: this batch's own.
    """
    adjusted = ref_logits.detach().float() - beta * F.one_hot(targets, logits.shape[-1])  # (B, T, V)
    q = F.softmax(adjusted, dim=-1)  # (B, T, V)
    logps = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    return token_mean(-(q * logps).sum(-1), mask, weights, num_items_in_batch)


class UNDIALTrainer(UnlearnTrainer):
    """UNDIAL (Dong et al., "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large Language
    Models", NAACL 2025). Needs the frozen initial model on every batch (a frozen copy, `ref_model`, or the PEFT
    model with its adapter disabled).

    The loss is averaged over the labelled answer positions only (the reference toolkit averages over every position
    of the batch, prompt and padding included). Logs `forget_nll` and the retain term.

    Example:
    ```python
    >>> from hf_unlearn import UNDIALConfig, UNDIALTrainer
    >>> UNDIALTrainer(model, UNDIALConfig(output_dir="undial", beta=10.0, max_steps=10), forget_dataset=forget).train()
    ```
    """

    needs_reference_model = True

    def forget_loss(self, model, inputs):
        batch = self.forget_forward(model, inputs)
        ref_logits = self.reference_logits(model, inputs["forget"])
        labels = inputs["forget"]["labels"]
        logits, targets, mask = answer_positions(batch.logits, labels)
        ref_logits = answer_positions(ref_logits, labels)[0]
        loss = undial_loss(logits, ref_logits, targets, mask, self.args.beta, batch.weights, batch.num_items("token"))
        return self.args.forget_loss_weight * loss
