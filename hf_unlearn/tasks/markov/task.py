"""The Markov benchmark behind the task contract (`hf_unlearn.runtime.task`): its recipe, dry-run plan, batches,
stages (`pipeline.py`) and reports (`report.py`). Parsing imports no torch, so a recipe error answers at once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...recipe import RecipeError
from ...runtime.launch import TrainingBatch, method_batches, training_batch
from ...runtime.task import RunOptions, Task, run_task
from .recipe import MarkovRecipe, describe_markov_recipe, parse_markov_recipe

if TYPE_CHECKING:
    from ...runtime.cache import StageLog

__all__ = ["MarkovTask", "run_markov"]


class MarkovTask(Task):
    """The synthetic Markov-chain benchmark: `results.json` and `tradeoff.png` in the recipe's output folder."""

    name = "markov"
    result_files = ("results.json", "tradeoff.png", "recovery.png")

    def parse(self, raw: dict[str, Any], options: RunOptions) -> MarkovRecipe:
        if options.data_dir is not None:
            raise RecipeError("--data-dir applies to TOFU recipes only (the Markov data is generated).")
        recipe = parse_markov_recipe(raw, output_dir=options.output_dir)
        if options.models_dir is not None:
            recipe.models_dir = str(options.models_dir)
        return recipe

    def describe(self, recipe: MarkovRecipe, options: RunOptions) -> str:
        return describe_markov_recipe(recipe)

    def batches(self, recipe: MarkovRecipe) -> list[TrainingBatch]:
        from transformers import TrainingArguments

        from ...trainers import METHODS

        classes = {label: METHODS[spec["method"]][0] for label, spec in recipe.methods.items()}
        batches = [training_batch("train", recipe.train_settings, TrainingArguments)]
        return batches + method_batches(recipe.shared_unlearn, recipe.methods, classes, flags=True)

    def run_stages(self, recipe: MarkovRecipe, log: StageLog, options: RunOptions) -> None:
        from .pipeline import run_stages

        run_stages(recipe, log)

    def write_reports(self, recipe: MarkovRecipe, log: StageLog) -> None:
        from .report import markov_table, plot_markov_tradeoff

        plot_markov_tradeoff(log.payload, recipe.output_path / "tradeoff.png")
        print(markov_table(log.payload))
        if recipe.attacks is not None:
            from .attacks import attacks_table, plot_recovery_curves

            plot_recovery_curves(log.payload, recipe.output_path / "recovery.png")
            print("\n" + attacks_table(log.payload))


def run_markov(recipe: MarkovRecipe, recipe_arg: str = "RECIPE") -> dict[str, Any]:
    """Run a parsed Markov recipe; writes `results.json` and `tradeoff.png` into its output directory."""
    return run_task(MarkovTask(), recipe, RunOptions(recipe_arg=recipe_arg))
