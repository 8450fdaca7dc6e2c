"""The TOFU evaluation suite (Maini et al., 2024, arXiv:2401.06121), pure: arguments, the rows it reads, the model
passes, the metrics and the callback that runs it during training. It writes and caches nothing (a benchmark run's
cached evaluation stage is `hf_unlearn.tasks.tofu`).

>>> summary = evaluate_tofu(model, tokenizer, TofuEvalArguments(forget_split="forget05"), data_dir="tofu/")  # doctest: +SKIP
"""

from .aggregate import MAIN_METRICS, TEACHER_FORCED_UTILITY, UTILITY_COMPONENTS, aggregate, item_values
from .arguments import EVAL_PRESETS, MIA_ATTACKS, TofuEvalArguments
from .callback import CHEAP_TOFU_EVAL, TofuEvalCallback
from .data import SPLITS, load_eval_rows, tofu_split_configs
from .plan import EvalPlan, generate_plan, plan_evaluation, score_plan
from .retain import ITEMS_FILE, SUMMARY_FILE, RetainReference, load_retain_reference
from .suite import check_pad_token, evaluate_rows, evaluate_tofu

__all__ = [
    "CHEAP_TOFU_EVAL",
    "EVAL_PRESETS",
    "ITEMS_FILE",
    "MAIN_METRICS",
    "MIA_ATTACKS",
    "SPLITS",
    "SUMMARY_FILE",
    "TEACHER_FORCED_UTILITY",
    "UTILITY_COMPONENTS",
    "EvalPlan",
    "RetainReference",
    "TofuEvalArguments",
    "TofuEvalCallback",
    "aggregate",
    "check_pad_token",
    "evaluate_rows",
    "evaluate_tofu",
    "generate_plan",
    "item_values",
    "load_eval_rows",
    "load_retain_reference",
    "plan_evaluation",
    "score_plan",
    "tofu_split_configs",
]
