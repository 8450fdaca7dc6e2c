"""Evaluation: the TOFU suite (`evaluate_tofu`) and its metrics as plain functions."""

from .metrics import (
    aggregate_truth_ratio,
    exact_memorization,
    extraction_strength,
    forget_quality,
    harmonic_mean,
    loss_score,
    mia_auc,
    min_k_score,
    normalized_probability,
    privleak,
    qa_probability,
    rouge_recall,
    truth_ratio,
    zlib_score,
)
from .results import RetainReference, load_retain_reference
from .tofu import FORGET_SPLITS, MIA_ATTACKS, evaluate_tofu, tofu_split_configs

__all__ = [
    "FORGET_SPLITS",
    "MIA_ATTACKS",
    "RetainReference",
    "aggregate_truth_ratio",
    "evaluate_tofu",
    "exact_memorization",
    "extraction_strength",
    "forget_quality",
    "harmonic_mean",
    "load_retain_reference",
    "loss_score",
    "mia_auc",
    "min_k_score",
    "normalized_probability",
    "privleak",
    "qa_probability",
    "rouge_recall",
    "tofu_split_configs",
    "truth_ratio",
    "zlib_score",
]
