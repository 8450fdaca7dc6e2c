"""`hf-unlearn finetune RECIPE`: fine-tune the TOFU target ("full") and retain models of a recipe with TRL's SFTTrainer.

    hf-unlearn finetune recipes/tofu/forget05_smollm2.yaml [--only target] [--data-dir DIR] [--dry-run]

Each model is cached in the recipe's `models_dir` with a fingerprint of its base model, data, formatting and SFT
settings, and reused by `hf-unlearn run` on the same recipe. Several processes (the recipe's launch.num_processes):
`accelerate launch --num_processes N -m hf_unlearn.cli finetune ...` on GPUs, `torchrun --nproc_per_node N ...` on CPUs.
"""

from __future__ import annotations

import argparse

from ..recipe import embedded_recipes, load_recipe

__all__ = ["register", "run_finetune_command"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("finetune", help="Fine-tune the target and retain models of a TOFU recipe (TRL SFT).",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("recipe", help=f"YAML file or embedded recipe name ({', '.join(embedded_recipes())})")
    parser.add_argument("--output-dir", default=None, help="The recipe's output directory (overrides the recipe).")
    parser.add_argument("--models-dir", default=None, help="Where fine-tuned models are cached (default OUTPUT/models).")
    parser.add_argument("--data-dir", default=None, help="Local TOFU folder (overrides the recipe's data_dir).")
    parser.add_argument("--only", choices=["target", "retain"], default=None, help="Fine-tune one of the two models only.")
    parser.add_argument("--dry-run", action="store_true",
                        help="Validate the recipe, build every config and print the plan; loads no weights.")
    parser.set_defaults(func=run_finetune_command)


def run_finetune_command(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe)
    if recipe.get("task") != "tofu":
        raise ValueError(f"Recipe {args.recipe!r} has task={recipe.get('task')!r}; `finetune` needs a TOFU recipe "
                         "(task: tofu).")
    from ..pipelines.tofu import run_finetune

    roles = (args.only,) if args.only else ("target", "retain")
    run_finetune(recipe, output_dir=args.output_dir, models_dir=args.models_dir, data_dir=args.data_dir,
                 dry_run=args.dry_run, recipe_arg=args.recipe, roles=roles)  # fmt: skip
    return 0
