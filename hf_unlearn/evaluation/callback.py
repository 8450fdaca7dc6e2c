"""`EvalMetricsCallback`: the base of callbacks that add metrics to every evaluation of an unlearning trainer
(`hf_unlearn.evaluation.tofu.TofuEvalCallback`, a benchmark's trajectory callbacks, your own)."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

__all__ = ["EvalMetricsCallback", "trajectory_record"]


class EvalMetricsCallback(TrainerCallback):
    """Base of callbacks that add metrics to every evaluation of an unlearning trainer.

    `UnlearnTrainer.evaluate` calls `compute_metrics` once per evaluation, before the loss passes, and adds the result
    (prefixed `eval_`) to the evaluation's metrics: they are logged (console, TensorBoard, ...), seen by other
    callbacks' `on_evaluate` (`EarlyStoppingCallback`) and usable as `metric_for_best_model`.
    """

    def compute_metrics(self, model: Any, processing_class: Any, args: Any, state: Any) -> dict[str, float]:
        raise NotImplementedError


def trajectory_record(callbacks: list[Any]) -> dict[str, Any]:
    """The trajectory of one unlearning run, from its `EvalMetricsCallback`s (anything with `history` and `seconds`):
    `history` (metrics at each evaluation), `eval_seconds` (their wall time, not part of the unlearning time), and
    `stopped` where a stopping callback ended the run."""
    record: dict[str, Any] = {}
    for callback in callbacks:
        if hasattr(callback, "history") and hasattr(callback, "seconds"):
            record.update(history=callback.history, eval_seconds=callback.seconds)
        if hasattr(callback, "stopped"):
            record["stopped"] = callback.stopped
    return record
