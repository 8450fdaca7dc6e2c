"""Trainer callbacks for unlearning runs: metrics at every evaluation, stopping at a forgetting target, a collapse guard,
and the method-labelled progress output of the trainers.

>>> callbacks = [
...     TofuEvalCallback(TofuEvalArguments(forget_split="forget05", max_items=20), data_dir="tofu/"),
...     StopAtTargetCallback("forget_Q_A_Prob <= 0.05"),
...     CollapseGuardCallback("eval_retain_loss > 1.5x"),
... ]  # doctest: +SKIP
>>> NPOTrainer(model, args, forget_dataset=forget, retain_dataset=retain, callbacks=callbacks).train()  # doctest: +SKIP

`EvalMetricsCallback` and `TofuEvalCallback` live with the evaluation suite (`hf_unlearn.evaluation.callback`,
`hf_unlearn.evaluation.tofu`); `TofuEvalCallback` is re-exported here on first use.
"""

from __future__ import annotations

import logging
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import has_length

from ._lazy import lazy_exports
from .evaluation.callback import EvalMetricsCallback

# Loaded on first use: the TOFU suite is not needed by a trainer that does not evaluate on TOFU.
_LAZY_EXPORTS = {"TofuEvalCallback": "hf_unlearn.evaluation.tofu"}
__all__ = [
    "CollapseGuardCallback",
    "EvalMetricsCallback",
    "MetricCondition",
    "StopAtTargetCallback",
    "StopOnMetricCallback",
    *_LAZY_EXPORTS,
]

logger = logging.getLogger(__name__)

_OPERATORS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_CONDITION = re.compile(r"^\s*([\w/.\-]+)\s*(<=|>=|<|>)\s*([-+0-9.eE]+|nan|inf)\s*(x?)\s*$")


@dataclass(frozen=True)
class MetricCondition:
    """`metric op value`, e.g. `forget_Q_A_Prob <= 0.05`; with `relative=True` the threshold is `value` times the
    metric's first logged value (`eval_retain_loss > 1.5x`: 50% above where it started).

    `metric` is looked up as logged, then with the `eval_` prefix (as `metric_for_best_model` is).
    """

    metric: str
    op: str
    value: float
    relative: bool = False

    @classmethod
    def parse(cls, condition: str | tuple | MetricCondition) -> MetricCondition:
        if isinstance(condition, MetricCondition):
            return condition
        if isinstance(condition, tuple):
            return cls(*condition)
        match = _CONDITION.match(condition) if isinstance(condition, str) else None
        if match is None:
            raise ValueError(
                f"Cannot read the condition {condition!r}: write 'METRIC OP VALUE' with OP one of <, <=, >, >= "
                "(e.g. 'forget_Q_A_Prob <= 0.05', or 'eval_retain_loss > 1.5x' relative to its first value)."
            )
        metric, op, value, relative = match.groups()
        return cls(metric, op, float(value), relative == "x")

    def __post_init__(self) -> None:
        if self.op not in _OPERATORS:
            raise ValueError(f"Unknown comparison {self.op!r} in a condition on {self.metric}: use <, <=, > or >=.")

    def find(self, logs: Mapping[str, Any]) -> str | None:
        """The key of `logs` that holds this metric, or None."""
        for key in (self.metric, f"eval_{self.metric}"):
            if isinstance(logs.get(key), (int, float)) and not isinstance(logs.get(key), bool):
                return key
        return None

    def threshold(self, first: float) -> float:
        return self.value * first if self.relative else self.value

    def holds(self, value: float, first: float) -> bool:
        return bool(_OPERATORS[self.op](value, self.threshold(first)))

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}{'x (relative to its first value)' if self.relative else ''}"


class StopOnMetricCallback(TrainerCallback):
    """Stops training when logged metrics meet conditions: `require="any"` (default) stops at the first condition that
    holds, `"all"` when all hold at once (each metric's latest value). Training logs (`forget_nll`, `loss`) and
    evaluation metrics (`eval_forget_loss`, TOFU metrics) both count. `stopped` records the step and values.

    Args:
        conditions: strings `"METRIC OP VALUE"` (OP: <, <=, >, >=; a value ending in `x` is relative to the metric's
            first logged value), `(metric, op, value)` tuples or `MetricCondition`s.
    """

    reason = "conditions met"

    def __init__(self, *conditions: str | tuple | MetricCondition, require: str = "any"):
        if not conditions:
            raise ValueError(f"{type(self).__name__} needs at least one condition, e.g. 'eval_forget_loss >= 5'.")
        if require not in ("any", "all"):
            raise ValueError(f"require must be 'any' or 'all', got {require!r}.")
        self.conditions = [MetricCondition.parse(condition) for condition in conditions]
        self.require = require
        self.first: dict[MetricCondition, float] = {}
        self.latest: dict[MetricCondition, tuple[str, float]] = {}
        self.stopped: dict[str, Any] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.first, self.latest, self.stopped = {}, {}, None

    def on_log(self, args, state, control, logs=None, **kwargs):
        for condition in self.conditions:
            key = condition.find(logs or {})
            if key is not None:
                self.first.setdefault(condition, float(logs[key]))
                self.latest[condition] = (key, float(logs[key]))
        met = [c for c in self.conditions if c in self.latest and c.holds(self.latest[c][1], self.first[c])]
        done = len(met) == len(self.conditions) if self.require == "all" else bool(met)
        if done and self.stopped is None and state.global_step > 0:
            values = {self.latest[c][0]: self.latest[c][1] for c in met}
            self.stopped = {"step": state.global_step, "conditions": [str(c) for c in met], "values": values}
            control.should_training_stop = True
            if state.is_world_process_zero:
                self.announce(state.global_step, met)
        return control

    def describe(self, conditions: list[MetricCondition]) -> str:
        parts = []
        for condition in conditions:
            key, value = self.latest[condition]
            threshold = condition.threshold(self.first[condition])
            parts.append(f"{key} = {value:.4g} {condition.op} {threshold:.4g}")
        return ", ".join(parts)

    def announce(self, step: int, conditions: list[MetricCondition]) -> None:
        logger.warning("%s at step %d (%s): training stops.", self.reason, step, self.describe(conditions))


class StopAtTargetCallback(StopOnMetricCallback):
    """Stops when a forgetting target is reached, e.g. `"forget_Q_A_Prob <= 0.05"`, `"forget_quality >= 0.05"`,
    `"eval_forget_loss >= 5"` (see `StopOnMetricCallback` for the condition syntax)."""

    reason = "Unlearning target reached"


class CollapseGuardCallback(StopOnMetricCallback):
    """Stops, with a warning, when the model collapses on what it should keep, e.g. `"eval_retain_loss > 1.5x"` (50%
    above its first value), `"model_utility < 0.3"` or `"retain_nll > 4"` (see `StopOnMetricCallback`)."""

    reason = "Collapse guard"

    def announce(self, step: int, conditions: list[MetricCondition]) -> None:
        logger.warning(
            "Collapse guard at step %d: %s. The model is losing what it should keep; training stops. Lower the "
            "learning rate, raise the retain weight, or keep an earlier checkpoint (load_best_model_at_end).",
            step,
            self.describe(conditions),
        )


# ----- method-labelled console output (installed by UnlearnTrainer in place of transformers' defaults) -----------


class LabelledProgressCallback(ProgressCallback):
    """transformers' progress bars, named after the method (`NPO`, `NPO eval`), and each printed log line prefixed with
    it (`[NPO] {'loss': ...}`, throughput figures left out); the logged metrics themselves are unchanged."""

    def __init__(self, label: str, max_str_len: int = 100):
        super().__init__(max_str_len)
        self.label = label

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.training_bar = tqdm(total=state.max_steps, dynamic_ncols=True, desc=self.label)
            write = self.training_bar.write
            self.training_bar.write = lambda text, *a, **k: write(f"[{self.label}] {text}", *a, **k)
        self.current_step = 0

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if state.is_world_process_zero and has_length(eval_dataloader) and self.prediction_bar is None:
            # The parent's bar, made here with a name; the parent counts the step.
            self.prediction_bar = tqdm(
                total=len(eval_dataloader),
                leave=self.training_bar is None,
                dynamic_ncols=True,
                desc=f"{self.label} eval",
            )
        super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        super().on_log(args, state, control, logs=_console(logs), **kwargs)


class LabelledPrinterCallback(PrinterCallback):
    """transformers' `PrinterCallback` (used with `disable_tqdm=True`), each line prefixed with the method's name."""

    def __init__(self, label: str):
        self.label = label

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in _console(logs).items() if k != "total_flos"}
        if state.is_local_process_zero:
            print(f"[{self.label}] {logs}")


def _console(logs: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a printed log line shows: everything but the throughput figures (`*_samples_per_second`, ...)."""
    return {key: value for key, value in (logs or {}).items() if not key.endswith("_per_second")}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY_EXPORTS, globals())
