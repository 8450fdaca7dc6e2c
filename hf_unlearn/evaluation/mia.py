"""The membership-inference attacks that need more than an answer's token log-probs: Min-K++ (the whole next-token
distribution at each answer position), Reference (a second model's loss) and GradNorm (a backward pass per item).

LOSS, ZLib and Min-K (`metrics.py`) read the scoring pass every evaluation makes; these three make their own pass,
one sequence at a time (no padding, every token attended to), only when asked for
(`TofuEvalArguments.mia_attacks`). Every score follows the
convention of the others: higher means less likely a member, so `metrics.mia_auc` reads them all alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..utils import IGNORE_INDEX

__all__ = [
    "SEQUENCE_ATTACKS",
    "as_attack_sequences",
    "gradnorm_score",
    "min_k_plus_plus_score",
    "next_token_statistics",
    "reference_score",
    "sequence_attack_scores",
]

# The attacks of this module, by their name in `mia_attacks` (the reported metric is `mia_<name>`).
SEQUENCE_ATTACKS = ("min_k_plus_plus", "gradnorm", "reference")


def min_k_plus_plus_score(
    token_logprobs: Sequence[float], means: Sequence[float], stds: Sequence[float], k: float = 0.4
) -> float:
    """Min-K%++ membership score: each token's log-prob standardised by its position's next-token distribution,
    `z_t = (log p(y_t) − μ_t) / σ_t` with `μ_t = E_{v∼p}[log p(v)]` and `σ_t² = E_{v∼p}[(log p(v) − μ_t)²]`; the score
    is −mean of the ⌊k·n⌋ (at least 1) smallest `z_t` (higher: less likely member). Same tokens as Min-K (the final
    end-of-turn token excluded)."""
    logps, mu, sigma = (np.asarray(v, dtype=np.float64) for v in (token_logprobs, means, stds))
    if logps.size == 0 or logps.shape != mu.shape or logps.shape != sigma.shape:
        raise ValueError(f"Min-K++ needs one mean and std per token, got {logps.shape}, {mu.shape}, {sigma.shape}.")
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}.")
    z = (logps - mu) / np.maximum(sigma, 1e-12)  # a one-hot distribution has σ = 0 (and log p = μ): z = 0
    count = max(1, int(z.size * k))
    return float(-np.mean(np.sort(z)[:count]))


def reference_score(avg_nll: float, reference_avg_nll: float) -> float:
    """Reference attack: the target model's average NLL of the answer minus a reference model's (the retain model,
    which never saw the forget set): low when the target finds the answer much likelier than the reference does
    (higher: less likely member)."""
    return float(avg_nll) - float(reference_avg_nll)


def gradnorm_score(gradients: Sequence[torch.Tensor | None], p: float = 2.0) -> float:
    """GradNorm attack: the mean over parameter tensors of the p-norm of the answer loss's gradient (members sit near
    a minimum: small gradients; higher: less likely member). `gradients`: one tensor per parameter (None skipped)."""
    norms = [g.detach().double().norm(p) for g in gradients if g is not None]
    if not norms:
        raise ValueError("GradNorm needs the gradient of at least one parameter.")
    return float(torch.stack(norms).mean())


def next_token_statistics(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(μ, σ)` of `log p(v)` under `p = softmax(logits)` at every position: `logits (..., V)` -> two `(...)`."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    prob = logp.exp()
    mean = (prob * logp).sum(-1)
    var = (prob * (logp - mean.unsqueeze(-1)) ** 2).sum(-1)
    return mean, var.clamp_min(0).sqrt()


def _answer_forward(model: torch.nn.Module, context: list[int], answer: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits predicting each answer token `(n, V)` and the answer ids `(n,)` for one sequence."""
    device = next(model.parameters()).device
    input_ids = torch.tensor([context + answer], device=device)
    logits = model(input_ids=input_ids).logits[0, len(context) - 1 : -1]
    return logits, torch.tensor(answer, device=device)


def sequence_attack_scores(
    model: torch.nn.Module,
    sequences: Sequence[tuple[list[int], list[int]]],
    attacks: Sequence[str],
    *,
    k: float = 0.4,
    reference_model: torch.nn.Module | None = None,
) -> list[dict[str, float]]:
    """`{"mia_<attack>": score}` for each `(context_ids, answer_ids)` (the answer ends with its end-of-turn token),
    for the `attacks` of `SEQUENCE_ATTACKS` asked for. The model's training mode and gradients are left as found."""
    unknown = sorted(set(attacks) - set(SEQUENCE_ATTACKS))
    if unknown:
        raise ValueError(f"Unknown sequence attack(s) {unknown}; use {list(SEQUENCE_ATTACKS)}.")
    if "reference" in attacks and reference_model is None:
        raise ValueError("The Reference attack needs a reference model (mia_reference_model).")
    results: list[dict[str, float]] = []
    for context, answer in sequences:
        if not context:
            raise ValueError("A scored answer needs at least one context token before it.")
        values: dict[str, float] = {}
        with torch.no_grad():
            logits, targets = _answer_forward(model, list(context), list(answer))
            logps = torch.log_softmax(logits.double(), dim=-1).gather(-1, targets[:, None])[:, 0]
            if "min_k_plus_plus" in attacks:
                body = slice(0, max(1, len(answer) - 1))  # the final end-of-turn token excluded, as for Min-K
                mean, std = next_token_statistics(logits[body])
                values["mia_min_k_plus_plus"] = min_k_plus_plus_score(
                    logps[body].cpu().numpy(), mean.cpu().numpy(), std.cpu().numpy(), k
                )
            if "reference" in attacks:
                ref_logits, ref_targets = _answer_forward(reference_model, list(context), list(answer))
                ref_logps = torch.log_softmax(ref_logits.double(), dim=-1).gather(-1, ref_targets[:, None])[:, 0]
                values["mia_reference"] = reference_score(-float(logps.mean()), -float(ref_logps.mean()))
        if "gradnorm" in attacks:
            values["mia_gradnorm"] = _gradnorm(model, list(context), list(answer))
        results.append(values)
    return results


def _gradnorm(model: torch.nn.Module, context: list[int], answer: list[int]) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    device = next(model.parameters()).device
    input_ids = torch.tensor([context + answer], device=device)
    labels = torch.tensor([[IGNORE_INDEX] * len(context) + answer], device=device)
    with torch.enable_grad():
        loss = model(input_ids=input_ids, labels=labels).loss  # the answer's mean NLL
        gradients = torch.autograd.grad(loss, params, allow_unused=True)
    return gradnorm_score(gradients)


def as_attack_sequences(plan: Any, split_items: Sequence[Any]) -> list[tuple[list[int], list[int]]]:
    """`(context, answer)` of each item's scored answer in a TOFU `EvalPlan`."""
    pairs = []
    for item in split_items:
        sequence = plan.sequences[item.answer]
        pairs.append((list(plan.prompts[sequence.prompt].input_ids), list(sequence.answer_ids)))
    return pairs
