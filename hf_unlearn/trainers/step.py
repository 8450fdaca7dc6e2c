"""What one optimizer step holds, so that every loss is normalised over the whole step (`docs/methods.md#batches`).

A step is `gradient_accumulation_steps` micro-batches on each of the launch's processes. Transformers normalises its
own causal-LM loss by the labelled tokens of the whole step (`num_items_in_batch`) rather than by each micro-batch's
own count, so the update does not depend on how the step is split; the unlearning trainers do the same for every
forget and retain term: `UnlearnTrainer.get_batch_samples` counts the step once (`StepCounts`, summed over
processes) and each loss divides its micro-batch's sum by the step's count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ForgetBatch", "StepCounts", "normalized_sum", "token_mean_of_sums"]


@dataclass(frozen=True)
class StepCounts:
    """Counts of one optimizer step, over every micro-batch of every process (the denominators of the step's means).

    Attributes:
        forget_sequences, retain_sequences: forget / retain examples in the step.
        forget_tokens, retain_tokens: their labelled next-token positions (the causal shift applied).
        forget_weight: Σ_i ŵ_i of the step's forget examples (influence weighting), else None.
    """

    forget_sequences: float = 0.0
    forget_tokens: float = 0.0
    retain_sequences: float = 0.0
    retain_tokens: float = 0.0
    forget_weight: float | None = None

    def forget(self, per: str, weighted: bool) -> float:
        """The forget mean's denominator: Σ ŵ over the step when `weighted`, else its tokens (`per="token"`) or
        sequences (`per="sequence"`)."""
        if weighted:
            return float(self.forget_weight)
        return self.forget_tokens if per == "token" else self.forget_sequences

    def retain(self, per: str) -> float:
        """The retain mean's denominator: the step's retain tokens (`per="token"`) or sequences."""
        return self.retain_tokens if per == "token" else self.retain_sequences


def normalized_sum(
    values: torch.Tensor, weights: torch.Tensor | None = None, num_items_in_batch: float | torch.Tensor | None = None
) -> torch.Tensor:
    """Σ_i w_i v_i / N, the micro-batch's share of a mean over the whole optimizer step.

    N is `num_items_in_batch` (the step's count, or its weight sum Σ ŵ) or, when it is None, the micro-batch's own
    (Σ_i w_i, or the number of values): then the result is the plain (weighted) mean of `values`. A mean whose
    weights sum to zero is 0 (only possible when weights are recomputed during training, so zero-weight samples are
    drawn too).

    Args:
        values: `(B,)` per-item terms (a sequence's summed NLL for a token mean, its mean NLL for a sequence mean, ...).
        weights: `(B,)` w_i ≥ 0, or None (all 1).
        num_items_in_batch: N, or None.
    """
    total = (values if weights is None else weights * values).sum()
    if num_items_in_batch is None:
        num_items_in_batch = len(values) if weights is None else weights.sum()
    if float(num_items_in_batch) <= 0:
        return total * 0.0
    return total / num_items_in_batch


def token_mean_of_sums(
    sums: torch.Tensor,
    counts: torch.Tensor,
    weights: torch.Tensor | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Σ_i s_i / N from per-sequence sums s_i over counts n_i tokens: the micro-batch's share of a token mean over the
    whole optimizer step (N = `num_items_in_batch`, the step's tokens; None: Σ_i n_i of this batch). With influence
    weights ŵ it is Σ_i ŵ_i s_i/n_i / Σ ŵ (N then the step's Σ ŵ): each sequence's own mean, weighted.

    Args:
        sums, counts: `(B,)`; weights: `(B,)` ŵ_i ≥ 0, or None.
    """
    if weights is not None:
        return normalized_sum(sums / counts, weights, num_items_in_batch)
    return normalized_sum(sums, None, counts.sum() if num_items_in_batch is None else num_items_in_batch)


@dataclass
class ForgetBatch:
    """The forget half of a micro-batch after the shared forward pass (`UnlearnTrainer.forget_forward`).

    Attributes:
        logits: `(B, T, V)` the model's outputs.
        nll: `(B,)` summed NLL of each sequence's labelled tokens; num_tokens: `(B,)` their count.
        weights: `(B,)` influence weights ŵ_i, or None without influence weighting.
        ref_nll: `(B,)` the reference model's summed NLL (methods with `needs_reference_nll`), else None.
        counts: the step's `StepCounts`, or None outside a training step (then means are over the micro-batch).
    """

    logits: torch.Tensor
    nll: torch.Tensor
    num_tokens: torch.Tensor
    weights: torch.Tensor | None = None
    ref_nll: torch.Tensor | None = None
    counts: StepCounts | None = None

    @property
    def mean_nll(self) -> torch.Tensor:
        """`(B,)` each sequence's token-mean NLL ℓ̄_i."""
        return self.nll / self.num_tokens

    def num_items(self, per: str) -> float | None:
        """The step's denominator for a mean `per` "token" or "sequence" (Σ ŵ with influence weights), or None
        outside a training step."""
        return None if self.counts is None else self.counts.forget(per, self.weights is not None)
