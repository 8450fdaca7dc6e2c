"""TOFU behind the task contract (`hf_unlearn.runtime.task`): its recipe (`recipe.py`), input checks (`checks.py`),
dry-run plan and stages (`pipeline.py`). The stages write the reports as they finish (`report.py`)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ...runtime.launch import TrainingBatch
from ...runtime.task import RunOptions, Task, run_task
from .checks import check_tofu_inputs, training_batches
from .pipeline import RESULT_FILES, describe_data, run_stages
from .recipe import TofuRecipe, describe_plan, parse_tofu_recipe

if TYPE_CHECKING:
    from ...runtime.cache import StageLog

__all__ = ["TofuTask", "run_tofu"]

PathLike = str | os.PathLike | None


class TofuTask(Task):
    """TOFU: target and retain models, every method of the recipe, the TOFU suite on each; `results.json`, `table.md`,
    `samples.md` and `tradeoff.png` in the recipe's output folder, rewritten after every stage (no `write_reports`)."""

    name = "tofu"
    result_files = RESULT_FILES

    def parse(self, raw: dict[str, Any], options: RunOptions) -> TofuRecipe:
        return parse_tofu_recipe(
            raw,
            output_dir=options.output_dir,
            models_dir=options.models_dir,
            data_dir=options.data_dir,
            dry_run=options.dry_run,
        )

    def check_inputs(self, recipe: TofuRecipe, options: RunOptions) -> None:
        check_tofu_inputs(recipe, dry_run=options.dry_run)  # data, selections, model sources

    def describe(self, recipe: TofuRecipe, options: RunOptions) -> str:
        return describe_plan(recipe, "run", options.recipe_arg) + describe_data(recipe)

    def batches(self, recipe: TofuRecipe) -> list[TrainingBatch]:
        return training_batches(recipe, "run")

    def run_stages(self, recipe: TofuRecipe, log: StageLog, options: RunOptions) -> None:
        run_stages(recipe, log, options.device)


def run_tofu(
    recipe: dict[str, Any],
    *,
    output_dir: PathLike = None,
    models_dir: PathLike = None,
    data_dir: PathLike = None,
    dry_run: bool = False,
    recipe_arg: str = "RECIPE",
) -> dict[str, Any] | None:
    """`hf-unlearn run` for `task: tofu`; returns the results (also in `output_dir/results.json`)."""
    options = RunOptions(
        output_dir=output_dir, models_dir=models_dir, data_dir=data_dir, dry_run=dry_run, recipe_arg=recipe_arg
    )
    return run_task(TofuTask(), recipe, options)
