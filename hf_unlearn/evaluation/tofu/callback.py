"""`TofuEvalCallback`: TOFU metrics at every evaluation of an unlearning trainer, for logs, early stopping and the
choice of the best checkpoint.

>>> args = NPOConfig(output_dir="npo", eval_strategy="steps", eval_steps=25, save_steps=25,
...                  load_best_model_at_end=True, metric_for_best_model="forget_quality")  # doctest: +SKIP
>>> tofu = TofuEvalCallback(TofuEvalArguments(forget_split="forget05", compute_rouge=False),
...                         data_dir="tofu/", retain_logs="retain_eval/")  # doctest: +SKIP
>>> NPOTrainer(model, args, forget_dataset=forget, retain_dataset=retain, callbacks=[tofu]).train()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..callback import EvalMetricsCallback
from .aggregate import MAIN_METRICS, TEACHER_FORCED_UTILITY, UTILITY_COMPONENTS
from .arguments import TofuEvalArguments
from .suite import evaluate_tofu

__all__ = ["CHEAP_TOFU_EVAL", "TofuEvalCallback"]

logger = logging.getLogger(__name__)

# Teacher-forced metrics only (no generation): forget Q_A_Prob, truth ratio, forget quality, MIAs, retain Q_A_Prob.
CHEAP_TOFU_EVAL = {"compute_rouge": False}


class TofuEvalCallback(EvalMetricsCallback):
    """Runs a TOFU evaluation at every evaluation of an unlearning trainer (`eval_strategy="steps"` / `"epoch"`) and
    adds its metrics, as `eval_<name>`, to the Trainer's metrics: logged, seen by `EarlyStoppingCallback`, and
    selectable with `metric_for_best_model="forget_quality"` (with `greater_is_better=True`).

    Args:
        eval_args: what to evaluate (`TofuEvalArguments`: split, item limits, formatting). Default: the
            teacher-forced metrics only (`compute_rouge=False`, no generation), all items; set the `max_*_items`
            limits to keep frequent evaluations cheap.
        data_dir: local TOFU folder (None: `locuslab/TOFU` from the Hub).
        retain_logs: a retain-model evaluation (gives `forget_quality` and privleak's reference AUC).
        metrics: the summary keys to report (default: the headline metrics, model utility's components and
            `model_utility_teacher_forced`); those that are None (e.g. ROUGE without generation) are left out.
        score: optional `f(metrics) -> float`, reported as `eval_score`: a combined criterion for
            `metric_for_best_model="score"`, e.g. `lambda m: m["retain_Q_A_Prob"] - m["forget_Q_A_Prob"]`.
        evaluate_fn: the evaluation to call, `f(model, tokenizer, eval_args, data_dir=, retain_logs=, show_progress=,
            **evaluate_kwargs) -> summary` (default: `evaluate_tofu`).
        tokenizer: default: the trainer's processing class.
        evaluate_kwargs: further keyword arguments of `evaluate_fn`.

    `history` keeps `{"step", **metrics}` of every evaluation; `seconds` their total wall time.
    """

    def __init__(
        self,
        eval_args: TofuEvalArguments | None = None,
        *,
        data_dir: str | os.PathLike | None = None,
        retain_logs: str | os.PathLike | None = None,
        metrics: Sequence[str] | None = None,
        score: Callable[[dict[str, float]], float] | None = None,
        evaluate_fn: Callable[..., dict[str, Any]] = evaluate_tofu,
        tokenizer: Any | None = None,
        **evaluate_kwargs: Any,
    ):
        self.eval_args = eval_args if eval_args is not None else TofuEvalArguments(**CHEAP_TOFU_EVAL)
        self.data_dir = data_dir
        self.retain_logs = retain_logs
        self.metrics = (
            list(metrics) if metrics is not None else [*MAIN_METRICS, *UTILITY_COMPONENTS, TEACHER_FORCED_UTILITY]
        )
        self.score = score
        self.evaluate_fn = evaluate_fn
        self.tokenizer = tokenizer
        self.evaluate_kwargs = evaluate_kwargs
        self.history: list[dict[str, float]] = []
        self.seconds = 0.0

    def compute_metrics(self, model: Any, processing_class: Any, args: Any, state: Any) -> dict[str, float]:
        tokenizer = self.tokenizer if self.tokenizer is not None else processing_class
        if tokenizer is None:
            raise ValueError("TofuEvalCallback needs a tokenizer: pass processing_class to the trainer or tokenizer=.")
        tick = time.perf_counter()
        summary = self.evaluate_fn(
            model,
            tokenizer,
            self.eval_args,
            data_dir=self.data_dir,
            retain_logs=self.retain_logs,
            show_progress=False,
            **self.evaluate_kwargs,
        )
        self.seconds += time.perf_counter() - tick
        values = {
            name: float(summary[name])
            for name in self.metrics
            if isinstance(summary.get(name), (int, float)) and not isinstance(summary.get(name), bool)
        }
        if self.score is not None:
            values["score"] = float(self.score(values))
        if not self.history and state.is_world_process_zero:  # said at the first evaluation, not at every one
            for notice in summary.get("notices", []):
                logger.warning("TOFU evaluation: %s", notice)
        self.history.append({"step": state.global_step, **values})
        return values
