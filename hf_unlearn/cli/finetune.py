"""`hf-unlearn finetune RECIPE`: fine-tune the TOFU target ("full") and retain models of a recipe with TRL's SFTTrainer.

    hf-unlearn finetune recipes/tofu/forget05_smollm2.yaml [--only target] [--data-dir DIR] [--dry-run]

Each model is cached in the recipe's `models_dir` with a fingerprint of its base model, data, formatting and SFT
settings, and reused by `hf-unlearn run` on the same recipe. Several processes (the recipe's launch.num_processes):
`accelerate launch --config_file recipes/accelerate/ddp.yaml -m hf_unlearn.cli finetune ...` on GPUs,
`torchrun --nproc_per_node N ...` on CPUs; --per-device-train-batch-size / --gradient-accumulation-steps set the
`finetune` section's batch here.
"""

from __future__ import annotations

import argparse

from ..recipe import RecipeError, embedded_recipes
from .run import add_recipe_arguments, flag_overrides, load_with_overrides, recipe_command

__all__ = ["build_parser", "main"]


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipe", help=f"YAML file or embedded recipe name ({', '.join(embedded_recipes())})")
    parser.add_argument(
        "--only", choices=["target", "retain"], default=None, help="Fine-tune one of the two models only."
    )
    add_recipe_arguments(parser, "fine-tunes", batch_section="finetune")
    return parser


def main(args: argparse.Namespace) -> int:
    recipe = load_with_overrides(args.recipe, flag_overrides(args) + args.overrides)
    if recipe.get("task") != "tofu":
        raise RecipeError(
            f"Recipe {args.recipe!r} has task={recipe.get('task')!r}; `finetune` needs a TOFU recipe (task: tofu)."
        )
    from ..tasks.tofu.pipeline import run_finetune

    roles = (args.only,) if args.only else ("target", "retain")
    run_finetune(
        recipe,
        output_dir=args.output_dir,
        models_dir=args.models_dir,
        data_dir=args.data_dir,
        dry_run=args.dry_run,
        recipe_arg=recipe_command(args),
        roles=roles,
    )
    return 0
