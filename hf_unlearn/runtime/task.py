"""The task contract: what a benchmark (Markov, TOFU, the next one) fills in, and the one run every task goes through.

A task is a `Task` subclass in its own `hf_unlearn/tasks/<name>/task.py`:

- `parse(raw, options)`: the YAML mapping to the task's one typed recipe dataclass, checked completely (keys, types,
  every config built) before anything loads or trains; raises `RecipeError` naming the bad key.
- `describe(recipe, options)`: the resolved plan `--dry-run` prints.
- `batches(recipe)`: the batch of every training stage, for the process-count check.
- `run_stages(recipe, log)`: the stages, each through the stage cache (`runtime.cache`: `cached_stage`,
  `open_scratch`, `commit_stage`) inside `log.stage(name)`, metrics added to `log.payload` and saved after each;
  trajectories come from the trainer's `EvalMetricsCallback` (`evaluation.trajectory_record`).
- `check_inputs(recipe, options)` (optional): data and model sources, before anything trains.
- `write_reports(recipe, log)` (optional): tables and plots from `log.payload` (main process) at the end; a task
  that rewrites them after every stage in `run_stages` (TOFU) needs none.

The recipe has `output_path`, `models_path`, `seed`, `launch.num_processes`, `hub` (label -> push) and `settings()`.
`run_task` is the one prologue and epilogue: process group, parse, dry run, then `runtime.prologue.run_prologue`
(process count, Hub check, writable folders, output lock, earlier results moved aside, `results.json` with
`complete: false` until the end), seeds.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .launch import TrainingBatch
from .prologue import run_prologue

if TYPE_CHECKING:
    from .cache import StageLog

# Nothing here imports torch at import time: a task's recipe is parsed (and a bad one refused) before torch loads.
__all__ = ["RunOptions", "Task", "run_task"]


@dataclass
class RunOptions:
    """What the command line adds to a recipe: folders, `--dry-run`, and the command as typed (for messages)."""

    output_dir: str | None = None
    models_dir: str | None = None
    data_dir: str | None = None
    dry_run: bool = False
    recipe_arg: str = "RECIPE"
    command: str = "run"
    device: str | None = None  # set by run_task: this process's device (None: one CPU process)


class Task(abc.ABC):
    """A benchmark behind the one contract (see the module docstring)."""

    name: ClassVar[str]
    # What one run writes at the top of its output folder; an earlier run's copies move to `previous/` first.
    result_files: ClassVar[tuple[str, ...]] = ("results.json",)

    @abc.abstractmethod
    def parse(self, raw: dict[str, Any], options: RunOptions) -> Any:
        """The typed recipe, checked completely."""

    @abc.abstractmethod
    def describe(self, recipe: Any, options: RunOptions) -> str:
        """The plan `--dry-run` prints (nothing loaded, trained or downloaded)."""

    @abc.abstractmethod
    def batches(self, recipe: Any) -> list[TrainingBatch]:
        """The batch of every training stage (for the process-count check)."""

    @abc.abstractmethod
    def run_stages(self, recipe: Any, log: StageLog, options: RunOptions) -> None:
        """Every stage, each inside `log.stage(name)`, its numbers in `log.payload`."""

    def check_inputs(self, recipe: Any, options: RunOptions) -> None:
        """Data and model sources, before anything trains (default: nothing more than `parse` checked)."""
        return None

    def write_reports(self, recipe: Any, log: StageLog) -> None:
        """Tables and plots from `log.payload` (main process only; default: none)."""
        return None


def run_task(task: Task, raw: Any, options: RunOptions) -> dict[str, Any] | None:
    """Run a recipe of `task` end to end (`raw`: the YAML mapping, or a recipe `task.parse` made); returns the payload
    of `results.json` (None for a dry run)."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if launched and not options.dry_run:  # before any config is built: joining creates accelerate's state
        from .distributed import join_process_group

        join_process_group()
    recipe = task.parse(raw, options) if isinstance(raw, dict) else raw  # a bad recipe fails here, before torch
    from .distributed import is_main_process, join_process_group

    options.device = None if options.dry_run else join_process_group()
    task.check_inputs(recipe, options)
    if options.dry_run:
        print(task.describe(recipe, options))
        return None
    command = f"{options.command} {options.recipe_arg}"
    results, header = Path(recipe.output_path) / "results.json", {"task": task.name, "settings": recipe.settings()}
    with run_prologue(
        recipe, command, task.batches(recipe), results, header, task.result_files, device=options.device
    ) as log:
        from transformers import set_seed

        set_seed(recipe.seed)
        task.run_stages(recipe, log, options)
        log.save(complete=True)
        if is_main_process():
            task.write_reports(recipe, log)
            stages = log.payload["stages"]
            reused = sum(1 for stage in stages.values() if stage["reused"])
            print(
                f"\nWrote {', '.join(task.result_files)} to {recipe.output_path} ({log.payload['total_seconds']:.0f} s "
                f"this run; {reused} of {len(stages)} stages reused).",
                flush=True,
            )
    return log.payload
