"""Unlearning metrics as plain functions (`docs/metrics.md`): TOFU/MUSE metrics of per-item numbers
(open-unlearning definitions), KL between next-token distributions, and reading a trade-off at matched forgetting.

Inputs are what one teacher-forced forward pass gives per (prompt, answer) pair: the answer's per-token log-probs and
argmax predictions (both including the final end-of-turn token, which some metrics drop), and its average NLL
`NLL/|y|`. Aggregates are means over items, so the per-item values returned here can be kept and re-aggregated.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

# scipy.stats and sklearn are imported where used: together they take about a second to import, which every
# `import hf_unlearn.evaluation` (the Markov metrics included) would otherwise pay.

__all__ = [
    "TRUTH_RATIO_EPS",
    "aggregate_truth_ratio",
    "exact_memorization",
    "extraction_strength",
    "forget_quality",
    "harmonic_mean",
    "kl_per_position",
    "loss_score",
    "mia_auc",
    "min_k_score",
    "normalized_probability",
    "privleak",
    "qa_probability",
    "rouge_recall",
    "truth_ratio",
    "value_at_level",
    "zlib_score",
]

# The reference adds 1e-10 to denominators (truth ratio, normalised probability, closer-to-1 aggregation).
TRUTH_RATIO_EPS = 1e-10


def _nonempty(values: Sequence, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError(f"{what} is empty.")
    return array


def qa_probability(avg_nlls: float | Sequence[float]) -> float:
    """Per-item answer probability: exp(−NLL/|y|), the per-token geometric mean probability.

    Several answers (perturbed): the mean of their probabilities, per item first (`docs/metrics.md#tofu`). Q_A_Prob is the mean of
    this over items.
    """
    values = _nonempty(np.atleast_1d(avg_nlls), "avg_nlls")
    return float(np.mean(np.exp(-values)))


def truth_ratio(correct_avg_nll: float, wrong_avg_nlls: Sequence[float]) -> float:
    """TR = exp(−w)/(exp(−c) + 1e-10), c = NLL/|y| of the correct answer, w = mean of NLL/|y| over the wrong ones.

    Note that w averages the length-normalised NLLs, so exp(−w) is the geometric mean of the wrong answers' probabilities.
    """
    wrong = _nonempty(wrong_avg_nlls, "wrong_avg_nlls")
    return float(np.exp(-wrong.mean()) / (np.exp(-float(correct_avg_nll)) + TRUTH_RATIO_EPS))


def aggregate_truth_ratio(truth_ratios: Sequence[float], mode: Literal["closer_to_1", "true_better"]) -> float:
    """Aggregate per-item truth ratios.

    - `"closer_to_1"` (forget set): mean(min(TR, 1/(TR + 1e-10))): 1 when correct and wrong answers are equally likely.
    - `"true_better"` (retain, real authors, world facts): mean(max(0, 1 − TR)): high when the correct answer wins.
    """
    values = _nonempty(truth_ratios, "truth_ratios")
    if mode == "closer_to_1":
        return float(np.mean(np.minimum(values, 1.0 / (values + TRUTH_RATIO_EPS))))
    if mode == "true_better":
        return float(np.mean(np.maximum(0.0, 1.0 - values)))
    raise ValueError(f"Unknown truth-ratio aggregation {mode!r}; use 'closer_to_1' or 'true_better'.")


def normalized_probability(correct_avg_nll: float, wrong_avg_nlls: Sequence[float]) -> float:
    """p_c/(p_c + Σ p_wrong + 1e-10) with length-normalised probabilities p = exp(−NLL/|y|) (real authors, world facts)."""
    p_correct = math.exp(-float(correct_avg_nll))
    p_wrong = float(np.exp(-_nonempty(wrong_avg_nlls, "wrong_avg_nlls")).sum())
    return p_correct / (p_correct + p_wrong + TRUTH_RATIO_EPS)


def forget_quality(truth_ratios: Sequence[float], retain_truth_ratios: Sequence[float]) -> float:
    """p-value of the two-sample KS test (`scipy.stats.ks_2samp`) between the unlearned model's per-item forget-set
    truth ratios and the retain model's: high (→1) when indistinguishable from the retain model."""
    from scipy.stats import ks_2samp

    return float(
        ks_2samp(_nonempty(truth_ratios, "truth_ratios"), _nonempty(retain_truth_ratios, "retain_truth_ratios")).pvalue
    )


def harmonic_mean(values: Sequence[float]) -> float:
    """n / Σ 1/v_i (model utility over its 9 components); 0 if any component is 0. Negative values are an error."""
    array = _nonempty(values, "values")
    if np.any(array < 0) or np.any(np.isnan(array)):
        raise ValueError(f"The harmonic mean needs non-negative numbers, got {array.tolist()}.")
    if np.any(array == 0):
        return 0.0
    return float(array.size / np.sum(1.0 / array))


def _check_pair(predictions: Sequence[int], targets: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    preds, labels = np.asarray(predictions), np.asarray(targets)
    if preds.shape != labels.shape or labels.ndim != 1:
        raise ValueError(f"predictions and targets must be 1-D of equal length, got {preds.shape} and {labels.shape}.")
    if labels.size == 0:
        raise ValueError("No answer tokens to score.")
    return preds, labels


def extraction_strength(predictions: Sequence[int], targets: Sequence[int], *, reference_floor: bool = True) -> float:
    """ES = 1 − k*/n (Carlini et al. 2021), k* the smallest k with predictions[k:] == targets[k:].

    Inputs: the teacher-forced argmax predictions and the answer tokens, excluding the final end-of-turn token (n each).
    Reference quirk (`reference_floor=True`, open-unlearning): its loop stops at k = n − 1, so when no suffix matches
    ES = 1/n, the same as a match of the last token only. `reference_floor=False`: no match gives 0 (k* = n).
    """
    preds, labels = _check_pair(predictions, targets)
    n = labels.size
    mismatch = np.nonzero(preds != labels)[0]
    k_star = 0 if mismatch.size == 0 else int(mismatch[-1]) + 1  # the suffix after the last mismatch matches
    if k_star == n and reference_floor:
        k_star = n - 1
    return 1.0 - k_star / n


def exact_memorization(predictions: Sequence[int], targets: Sequence[int]) -> float:
    """EM = fraction of answer positions (end-of-turn token excluded) where the teacher-forced argmax equals the target."""
    preds, labels = _check_pair(predictions, targets)
    return float(np.mean(preds == labels))


def min_k_score(token_logprobs: Sequence[float], k: float = 0.4) -> float:
    """Min-K% membership score: −mean of the ⌊k·n⌋ (at least 1) smallest token log-probs (higher: less likely member).

    Inputs: the answer tokens' log-probs, excluding the final end-of-turn token (MUSE, k = 0.4).
    """
    values = _nonempty(token_logprobs, "token_logprobs")
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}.")
    count = max(1, int(values.size * k))
    return float(-np.mean(np.sort(values)[:count]))


def loss_score(avg_nll: float) -> float:
    """LOSS attack score: the answer's average NLL (higher: less likely member)."""
    return float(avg_nll)


def zlib_score(avg_nll: float, text: str) -> float:
    """ZLIB attack score: average NLL / len(zlib.compress(text)) (reference: the decoded sequence, prompt included)."""
    return float(avg_nll) / len(zlib.compress(text.encode("utf-8")))


def mia_auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """AUC = P(score_holdout > score_forget), `roc_auc_score` with labels 0 = forget, 1 = holdout.

    ≈1 when the model still separates its forget set (members) from unseen holdout data; ≈0.5 when it cannot.
    """
    from sklearn.metrics import roc_auc_score

    forget = _nonempty(forget_scores, "forget_scores")
    holdout = _nonempty(holdout_scores, "holdout_scores")
    labels = np.concatenate([np.zeros(forget.size), np.ones(holdout.size)])
    return float(roc_auc_score(labels, np.concatenate([forget, holdout])))


def privleak(auc: float, reference_auc: float = 0.5) -> float:
    """PrivLeak = (AUC_retain − AUC)/(1 − AUC_retain)·100 (MUSE), AUC_retain the retain model's min-k AUC (0.5 if unknown).

    ≈ −100: fully memorised; 0: like the retain model; positive: over-unlearned (unbounded above).
    """
    if not 0.0 <= reference_auc < 1.0:
        raise ValueError(f"The reference AUC must be in [0, 1), got {reference_auc}.")
    return (reference_auc - auc) / (1.0 - reference_auc) * 100.0


_SCORER = None


def rouge_recall(prediction: str, reference: str) -> dict[str, float]:
    """rouge1 and rougeL recall of `prediction` against `reference` (`rouge_score`, Porter stemmer), as the reference.

    Recall = overlap / tokens of the reference answer (rougeL: longest common subsequence).
    """
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    scores = _SCORER.score(reference, prediction)  # score(target, prediction)
    return {"rouge1_recall": scores["rouge1"].recall, "rougeL_recall": scores["rougeL"].recall}


# ------------------------------------------------------------------------------------------------ distributions


def kl_per_position(target_logps: torch.Tensor, logps: torch.Tensor) -> torch.Tensor:
    """KL(p_target ‖ p) at each position: Σ_v p_target(v)·(log p_target(v) − log p(v)), `(..., V) -> (...)`."""
    return (target_logps.exp() * (target_logps - logps)).sum(dim=-1)


def value_at_level(
    history: Sequence[dict[str, float]], x_key: str, y_key: str, level: float, falling: bool = False
) -> float | None:
    """`history[y_key]` where `history[x_key]` first reaches `level` (linear between entries); None if it never does.

    A trajectory of evaluations (e.g. forget KL and retain KL after every step) read at a common forgetting level:
    the fair comparison of two methods, since one that forgets less always keeps more. `falling=True` for a measure
    that forgetting lowers (forget Q_A prob): "reaches" is then `x <= level`.
    """
    sign = -1.0 if falling else 1.0
    target = sign * level
    for before, after in itertools.pairwise(history):
        x_before, x_after = sign * before[x_key], sign * after[x_key]
        if x_before >= target:
            return before[y_key]
        if x_after >= target:
            fraction = (target - x_before) / (x_after - x_before)
            return before[y_key] + fraction * (after[y_key] - before[y_key])
    return history[-1][y_key] if history and sign * history[-1][x_key] >= target else None
