"""TOFU behind the task contract (`hf_unlearn.runtime.task`): its recipe, dry-run plan, batches, stages
(`pipeline.py`) and reports; and `run_finetune`, the `hf-unlearn finetune` command (the fine-tuning stages alone)."""

from __future__ import annotations

import os
from typing import Any

from ...runtime.cache import StageLog
from ...runtime.distributed import join_process_group, main_process_print
from ...runtime.launch import TrainingBatch
from ...runtime.prologue import run_prologue
from ...runtime.task import RunOptions, Task, run_task
from . import pipeline
from .checks import check_tofu_inputs
from .finetune import ensure_models
from .recipe import TofuRecipe, describe_plan, parse_tofu_recipe

__all__ = ["TofuTask", "run_finetune", "run_tofu"]

PathLike = str | os.PathLike | None


class TofuTask(Task):
    """TOFU: target and retain models, every method of the recipe, the TOFU suite on each; `results.json`, `table.md`,
    `samples.md` and `tradeoff.png` in the recipe's output folder."""

    name = "tofu"
    result_files = pipeline.RESULT_FILES

    def __init__(self) -> None:
        self.samples: dict[str, dict[str, list[dict[str, Any]]]] = {}  # in memory only: becomes samples.md

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
        return describe_plan(recipe, "run", options.recipe_arg) + pipeline.describe_data(recipe)

    def batches(self, recipe: TofuRecipe) -> list[TrainingBatch]:
        return pipeline.training_batches(recipe, "run")

    def run_stages(self, recipe: TofuRecipe, log: StageLog, options: RunOptions) -> None:
        pipeline.run_stages(recipe, log, self.samples, options.device)

    def write_reports(self, recipe: TofuRecipe, log: StageLog) -> None:
        print(pipeline.write_reports(recipe, log, self.samples))


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


def run_finetune(
    recipe: dict[str, Any],
    *,
    output_dir: PathLike = None,
    models_dir: PathLike = None,
    data_dir: PathLike = None,
    dry_run: bool = False,
    recipe_arg: str = "RECIPE",
    roles: tuple[str, ...] = ("target", "retain"),
) -> dict[str, str]:
    """`hf-unlearn finetune`: only the fine-tuning stages of a TOFU recipe (each cached). Returns role -> folder."""
    device = None if dry_run else join_process_group()  # before any config is built: it creates accelerate's state
    plan = parse_tofu_recipe(
        recipe, output_dir=output_dir, models_dir=models_dir, data_dir=data_dir, require_methods=False, dry_run=dry_run
    )
    check_tofu_inputs(plan, dry_run=dry_run, command="finetune")  # data, selections, model sources
    if dry_run:
        print(describe_plan(plan, "finetune", recipe_arg) + pipeline.describe_data(plan))
        return {}
    if not plan.train_data:
        print("Nothing to fine-tune: the recipe gives both models (models.target / models.retain name_or_path).")
        return {}
    folders = {"models folder": plan.models_dir}
    with run_prologue(plan, f"finetune {recipe_arg}", pipeline.training_batches(plan, "finetune"), folders, hub=False):
        log = StageLog.start(
            plan.models_dir / "finetune_results.json",
            {"task": "tofu-finetune", "settings": plan.settings()},
            ("finetune_results.json",),
            device=device,
        )
        models = ensure_models(plan, log, device, roles=tuple(r for r in roles if r in plan.train_data))
        log.save(complete=True)
    for role, spec in models.items():
        main_process_print(f"{role} model: {spec.path}")
    return {role: spec.path for role, spec in models.items()}
