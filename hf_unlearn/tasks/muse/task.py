"""MUSE behind the task contract (`hf_unlearn.runtime.task`): its recipe, dry-run plan, batches, stages
(`pipeline.py`) and table. Parsing imports no torch, so a recipe error answers at once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...runtime.launch import TrainingBatch
from ...runtime.task import RunOptions, Task, run_task
from .recipe import MuseRecipe, describe_muse_recipe, parse_muse_recipe

if TYPE_CHECKING:
    from ...runtime.cache import StageLog

__all__ = ["MuseTask", "run_muse"]


class MuseTask(Task):
    """MUSE (News, Books): target and retain models, every method of the recipe, the MUSE metrics on each;
    `results.json` and `table.md` in the recipe's output folder."""

    name = "muse"
    result_files = ("results.json", "table.md")

    def parse(self, raw: dict[str, Any], options: RunOptions) -> MuseRecipe:
        return parse_muse_recipe(
            raw,
            output_dir=options.output_dir,
            models_dir=options.models_dir,
            data_dir=options.data_dir,
            dry_run=options.dry_run,
        )

    def check_inputs(self, recipe: MuseRecipe, options: RunOptions) -> None:
        from pathlib import Path

        if recipe.data_dir is not None and not Path(recipe.data_dir).is_dir():
            raise FileNotFoundError(
                f"data_dir {recipe.data_dir!r} is not a folder (MUSE's layout: raw/, verbmem/, ...)."
            )

    def describe(self, recipe: MuseRecipe, options: RunOptions) -> str:
        return describe_muse_recipe(recipe, options.recipe_arg)

    def batches(self, recipe: MuseRecipe) -> list[TrainingBatch]:
        from .pipeline import training_batches

        return training_batches(recipe)

    def run_stages(self, recipe: MuseRecipe, log: StageLog, options: RunOptions) -> None:
        from .pipeline import run_stages

        run_stages(recipe, log, options.device)

    def write_reports(self, recipe: MuseRecipe, log: StageLog) -> None:
        from ...runtime.io import atomic_write_text
        from .report import muse_table

        table = muse_table(log.payload)
        atomic_write_text(recipe.output_dir / "table.md", table + "\n")
        print(table)


def run_muse(recipe: dict[str, Any] | MuseRecipe, options: RunOptions | None = None) -> dict[str, Any] | None:
    """Run a MUSE recipe; writes `results.json` and `table.md` into its output directory."""
    return run_task(MuseTask(), recipe, options or RunOptions())
