"""lm-eval's benchmarks (WMDP `wmdp_bio` / `wmdp_chem` / `wmdp_cyber`, `mmlu`, any task it knows or a local task
YAML) on a model in memory: `simple_evaluate` with lm-eval's `HFLM` wrapped around our model (a PEFT model evaluates
with its adapter) and tokenizer. Needs the `lm-eval` extra (`pip install 'hf-unlearn[lm-eval]'`).

WMDP and MMLU are zero-shot multiple choice scored by the likelihood of each answer letter, no chat template (lm-eval's
own task definitions); their questions come from the Hub unless the Hugging Face cache already holds them. Offline, a
task YAML with `dataset_path: json` and local `data_files` in a folder given as `include_path` works the same way.

    >>> from hf_unlearn.evaluation.lm_eval import LmEvalArguments, evaluate_lm_eval
    >>> scores = evaluate_lm_eval(model, tokenizer, LmEvalArguments(tasks=["wmdp_bio", "mmlu"]))
    >>> scores["wmdp_bio"]["acc"]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LmEvalArguments", "evaluate_lm_eval", "lm_eval_available"]


def lm_eval_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("lm_eval") is not None


@dataclass
class LmEvalArguments:
    """Which lm-eval tasks and how (a recipe's `lm_eval` section, `hf-unlearn eval --lm-eval-tasks`).

    Parameters:
        tasks: lm-eval task or group names (`wmdp_bio`, `wmdp_cyber`, `mmlu`, a local task's `task:` name).
        include_path: a folder of extra task YAML files (local tasks and data).
        num_fewshot: in-context examples (null: each task's default; WMDP and MMLU: 0).
        limit: the first N documents of each task (null: all); a quick look, not a benchmark number.
        batch_size: sequences per forward pass.
        max_length: the context lm-eval truncates to (null: the model's).
    """

    tasks: list[str] = field(default_factory=list, metadata={"help": "lm-eval task names, e.g. wmdp_bio, mmlu."})
    include_path: str | None = field(default=None, metadata={"help": "Folder of extra task YAML files."})
    num_fewshot: int | None = field(default=None, metadata={"help": "In-context examples (null: task default)."})
    limit: int | None = field(default=None, metadata={"help": "First N documents per task (null: all)."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per forward pass."})
    max_length: int | None = field(default=None, metadata={"help": "Context length (null: the model's)."})

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):
            self.tasks = [name.strip() for name in self.tasks.split(",") if name.strip()]
        if not self.tasks:
            raise ValueError("tasks must name at least one lm-eval task, e.g. [wmdp_bio, mmlu].")
        for name in ("limit", "batch_size", "max_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise ValueError(f"num_fewshot must be >= 0, got {self.num_fewshot}.")

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        parts = [f"{self.num_fewshot}-shot" if self.num_fewshot is not None else "task-default shots"]
        parts.append(f"first {self.limit} documents" if self.limit else "all documents")
        return ", ".join(parts + ([f"tasks from {self.include_path}"] if self.include_path else []))


def evaluate_lm_eval(model: Any, tokenizer: Any, args: LmEvalArguments) -> dict[str, dict[str, float]]:
    """Task -> metric -> value (lm-eval's `acc`, `acc_norm`, their `_stderr`, ... with the `,none` filter suffix
    dropped), for every task and group lm-eval reports."""
    if not lm_eval_available():
        raise ImportError("lm-eval tasks need the lm-eval package: pip install 'hf-unlearn[lm-eval]'.")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    was_training = model.training
    model.eval()
    try:
        wrapper = HFLM(
            pretrained=model,
            tokenizer=tokenizer,
            batch_size=args.batch_size,
            max_length=args.max_length,
            device=str(next(model.parameters()).device),
        )
        output = simple_evaluate(
            model=wrapper,
            tasks=list(args.tasks),
            num_fewshot=args.num_fewshot,
            limit=args.limit,
            task_manager=TaskManager(include_path=args.include_path),
            log_samples=False,
            bootstrap_iters=0,
        )
    finally:
        model.train(was_training)
    if output is None:  # other ranks of a distributed lm-eval run
        return {}
    return {
        task: {
            metric.split(",")[0]: float(value)
            for metric, value in values.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and metric != "samples"
        }
        for task, values in output["results"].items()
    }
