"""Evaluation building blocks: metric functions and the batched, process-sharded scoring/generation runner.

The benchmark suites that compose them live with their tasks (`hf_unlearn.tasks.tofu.evaluate_tofu`).
"""

from .metrics import (
    aggregate_truth_ratio,
    exact_memorization,
    extraction_strength,
    forget_quality,
    harmonic_mean,
    kl_per_position,
    loss_score,
    mia_auc,
    min_k_score,
    normalized_probability,
    privleak,
    qa_probability,
    rouge_recall,
    truth_ratio,
    value_at_level,
    zlib_score,
)

__all__ = [
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
