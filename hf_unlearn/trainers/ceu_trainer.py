"""CE-U: cross-entropy towards the model's own distribution with the labelled token removed."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base_trainer import UnlearnTrainer
from .token_terms import answer_positions, token_mean

__all__ = ["CEUTrainer", "ceu_loss"]


def ceu_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """L_CE-U = (1/N)·Σ_{t∈A} −Σ_v q_{t,v} log softmax(z_t)_v, q_t = softmax(sg(z_t) with z_{t,y_t} = −∞) (Bo Yang,
    "CE-U: Cross Entropy Unlearning", arXiv:2503.01224): the labelled token's probability goes to zero while the
    others keep their relative order.

    Args:
        logits: `(B, T, V)` z_t, the scores of the token `targets[:, t]`.
        targets: `(B, T)` y_t (any id where `mask` is False); mask: `(B, T)` the positions A that count.
        weights: `(B,)` influence weights ŵ_i, or None.
        num_items_in_batch: N, the step's counted forget tokens (Σ ŵ with weights); None: this batch's own.
    """
    logits = logits.float()
    logps = F.log_softmax(logits, dim=-1)  # (B, T, V)
    removed = logits.detach().scatter(-1, targets[..., None], float("-inf"))  # (B, T, V)
    q = F.softmax(removed, dim=-1)  # (B, T, V), 0 at y_t
    return token_mean(-(q * logps).sum(-1), mask, weights, num_items_in_batch)


def drop_first_tokens(mask: torch.Tensor, n: int) -> torch.Tensor:
    """`mask` without the first `n` True positions of each row, `(B, T)`."""
    return mask & (mask.cumsum(-1) > n)


class CEUTrainer(UnlearnTrainer):
    """CE-U (Bo Yang, "CE-U: Cross Entropy Unlearning", arXiv:2503.01224). No reference model.

    The step's count of the tokens that count is its labelled forget tokens minus n per sequence (every sequence must
    have at least n). Logs `forget_nll` (token mean of the forget batch) and the retain term.

    Example:
    ```python
    >>> from hf_unlearn import CEUConfig, CEUTrainer
    >>> CEUTrainer(model, CEUConfig(output_dir="ceu", max_steps=10), forget_dataset=forget).train()
    ```
    """

    def forget_loss(self, model, inputs):
        batch = self.forget_forward(model, inputs)
        n = self.args.ignore_first_answer_tokens
        if bool((batch.num_tokens < n).any()):
            raise ValueError(
                f"ignore_first_answer_tokens={n}, but a forget row has only {int(batch.num_tokens.min())} answer "
                "tokens: lower it or drop the short rows."
            )
        logits, targets, mask = answer_positions(batch.logits, inputs["forget"]["labels"])
        num_items = batch.num_items("token")
        if num_items is not None and batch.weights is None:  # the step's tokens minus the n left out per sequence
            num_items = num_items - n * self.step_counts.forget_sequences
        loss = ceu_loss(logits, targets, drop_first_tokens(mask, n), batch.weights, num_items)
        return self.args.forget_loss_weight * loss
