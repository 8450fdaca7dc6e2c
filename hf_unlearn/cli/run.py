"""`hf-unlearn run RECIPE`: run a YAML recipe end to end (train if needed, unlearn, evaluate, report)."""

from __future__ import annotations

import argparse

from ..recipe import RecipeError, embedded_recipes, load_recipe, parse_override, select_methods, set_override

__all__ = ["add_recipe_arguments", "build_parser", "load_with_overrides", "main"]

TASKS = ("markov", "tofu")


def add_recipe_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """The options every recipe command takes: where things go, `--set` overrides, `--dry-run`."""
    parser.add_argument("--output-dir", default=None, help="The recipe's output directory (overrides the recipe).")
    parser.add_argument(
        "--models-dir", default=None, help="TOFU: where fine-tuned models are cached (default OUTPUT/models)."
    )
    parser.add_argument("--data-dir", default=None, help="TOFU: a local TOFU folder (overrides the recipe's data_dir).")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a recipe value, e.g. --set unlearn.learning_rate=1e-4 (repeatable; YAML values).",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=f"Check the recipe, build every config and print the resolved plan; {what} nothing.",
    )


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Run a recipe end to end. Without RECIPE, runs the embedded Markov-chain benchmark."
    )
    parser.add_argument(
        "recipe",
        nargs="?",
        default="markov",
        help=f"YAML file or embedded recipe name ({', '.join(embedded_recipes())}); default: markov",
    )
    parser.add_argument(
        "--methods",
        default=None,
        metavar="LABEL[,LABEL...]",
        help="Run only these entries of the recipe's methods (cached stages of the others are kept).",
    )
    parser.add_argument(
        "--push-to-hub",
        default=None,
        metavar="REPO_ID",
        help="Push every unlearned model to the Hub (private): REPO_ID for one method, REPO_ID-<label> for several "
        "(sets unlearn.push_to_hub and unlearn.hub_model_id; checked before anything trains).",
    )
    add_recipe_arguments(parser, "trains")
    return parser


def load_with_overrides(recipe_arg: str, overrides: list[str]) -> dict:
    """The recipe with every `--set KEY=VALUE` applied."""
    recipe = load_recipe(recipe_arg)
    for text in overrides:
        path, value = parse_override(text)
        recipe = set_override(recipe, path, value)
    return recipe


def main(args: argparse.Namespace) -> int:
    recipe = load_with_overrides(args.recipe, args.overrides)
    if args.push_to_hub is not None:
        recipe = set_override(recipe, ["unlearn", "push_to_hub"], True)
        recipe = set_override(recipe, ["unlearn", "hub_model_id"], args.push_to_hub)
    if args.methods is not None:
        recipe = select_methods(recipe, [label.strip() for label in args.methods.split(",") if label.strip()])
    task = recipe.get("task")
    if task not in TASKS:
        raise RecipeError(f"Recipe {args.recipe!r} has task={task!r}; supported tasks: {', '.join(TASKS)}.")
    if task == "tofu":
        from ..tasks.tofu.pipeline import run_tofu

        run_tofu(
            recipe,
            output_dir=args.output_dir,
            models_dir=args.models_dir,
            data_dir=args.data_dir,
            dry_run=args.dry_run,
            recipe_arg=args.recipe,
        )
        return 0
    if args.models_dir or args.data_dir:
        raise RecipeError("--models-dir and --data-dir apply to TOFU recipes only (a Markov recipe has models_dir).")
    from ..tasks.markov.recipe import describe_markov_recipe, parse_markov_recipe

    parsed = parse_markov_recipe(recipe, output_dir=args.output_dir)
    if args.dry_run:
        print(describe_markov_recipe(parsed))
        return 0
    from ..tasks.markov.pipeline import run_markov

    run_markov(parsed)
    return 0
