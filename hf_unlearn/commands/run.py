"""`hf-unlearn run RECIPE`: run a YAML recipe end to end (train if needed, unlearn, evaluate, report)."""

from __future__ import annotations

import argparse

from ..recipe import embedded_recipes, load_recipe, select_methods

TASKS = ("markov", "tofu")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="Run a recipe (a YAML file, or the name of an embedded recipe such as 'markov').",
        description="Run a recipe end to end. Without RECIPE, runs the embedded Markov-chain benchmark.",
    )
    parser.add_argument("recipe", nargs="?", default="markov",
                        help=f"YAML file or embedded recipe name ({', '.join(embedded_recipes())}); default: markov")
    parser.add_argument("--output-dir", default=None, help="Where models, results.json and plots go (overrides the recipe).")
    parser.add_argument("--models-dir", default=None,
                        help="TOFU: where fine-tuned models are cached (default OUTPUT/models).")
    parser.add_argument("--data-dir", default=None, help="TOFU: local TOFU folder (overrides the recipe's data_dir).")
    parser.add_argument("--methods", default=None, metavar="LABEL[,LABEL...]",
                        help="Run only these entries of the recipe's methods (cached stages of the others are kept).")
    parser.add_argument("--dry-run", action="store_true",
                        help="TOFU: validate the recipe, build every config and print the plan; loads no weights.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe)
    if args.methods is not None:
        recipe = select_methods(recipe, [label.strip() for label in args.methods.split(",") if label.strip()])
    task = recipe.get("task")
    if task not in TASKS:
        raise ValueError(f"Recipe {args.recipe!r} has task={task!r}; supported tasks: {', '.join(TASKS)}.")
    if task == "tofu":
        from ..pipelines.tofu import run_tofu

        run_tofu(recipe, output_dir=args.output_dir, models_dir=args.models_dir, data_dir=args.data_dir,
                 dry_run=args.dry_run, recipe_arg=args.recipe)  # fmt: skip
        return 0
    if args.dry_run or args.models_dir or args.data_dir:
        raise ValueError("--dry-run, --models-dir and --data-dir apply to TOFU recipes only.")
    from ..pipelines.markov import run_markov

    run_markov(recipe, output_dir=args.output_dir)
    return 0
