"""`EvalMetricsCallback`: the base of callbacks that add metrics to every evaluation of an unlearning trainer
(`hf_unlearn.evaluation.tofu.TofuEvalCallback`, a benchmark's trajectory callbacks, your own)."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

__all__ = ["EvalMetricsCallback"]


class EvalMetricsCallback(TrainerCallback):
    """Base of callbacks that add metrics to every evaluation of an unlearning trainer.

    `UnlearnTrainer.evaluate` calls `compute_metrics` once per evaluation, before the loss passes, and adds the result
    (prefixed `eval_`) to the evaluation's metrics: they are logged (console, TensorBoard, ...), seen by other
    callbacks' `on_evaluate` (`EarlyStoppingCallback`) and usable as `metric_for_best_model`.
    """

    def compute_metrics(self, model: Any, processing_class: Any, args: Any, state: Any) -> dict[str, float]:
        raise NotImplementedError
