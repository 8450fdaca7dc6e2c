"""Per-token terms of the token-level methods (WGA, SatImp, CE-U, UNDIAL, ME+GD, PDU, RMU): the answer positions of
a batch and the token mean over the whole optimizer step."""

from __future__ import annotations

import torch

from ..utils import IGNORE_INDEX
from .step import token_mean_of_sums

__all__ = ["answer_positions", "token_mean"]


def answer_positions(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The HF causal shift: `(logits, targets, mask)` with `logits[b, t]` the scores of the token `targets[b, t]`.

    Args:
        logits: `(B, T, V)`; labels: `(B, T)`, -100 where ignored.

    Returns:
        `(B, T-1, V)` logits, `(B, T-1)` targets (0 where ignored, so they can index), `(B, T-1)` bool mask.
    """
    mask = labels[:, 1:].ne(IGNORE_INDEX)  # (B, T-1)
    return logits[:, :-1], labels[:, 1:].masked_fill(~mask, 0), mask


def token_mean(
    values: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """(1/N)·Σ_{t∈A} v_t, the micro-batch's share of a mean over the labelled tokens A of the whole optimizer step.

    With influence weights ŵ (one per sequence) it is Σ_i ŵ_i v̄_i / Σ ŵ, v̄_i the mean over sequence i's labelled
    tokens, as GA's weighted loss (`docs/methods.md#influence-weighting`).

    Args:
        values: `(B, T)` per-position terms (anything where `mask` is False).
        mask: `(B, T)` the labelled positions.
        weights: `(B,)` ŵ_i ≥ 0, or None.
        num_items_in_batch: N, the step's labelled tokens (or Σ ŵ with weights); None: this batch's own.
    """
    sums = values.masked_fill(~mask, 0.0).sum(-1)  # (B,)
    counts = mask.sum(-1)  # (B,)
    if weights is not None:
        counts = counts.clamp(min=1)  # a row without labelled positions contributes 0 to the weighted mean
    return token_mean_of_sums(sums, counts, weights, num_items_in_batch)
