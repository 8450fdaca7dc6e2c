"""Evaluation: metric functions, the batched, process-sharded scoring/generation runner, the base of the callbacks
that evaluate during training, and the benchmark suites that compose them (`hf_unlearn.evaluation.tofu`).
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
