"""`hf-unlearn run RECIPE`: run a YAML recipe end to end (train if needed, unlearn, evaluate, report).

Several processes: `accelerate launch --config_file recipes/accelerate/ddp.yaml -m hf_unlearn.cli run RECIPE` on GPUs
(FSDP2 and DeepSpeed configs beside it), `torchrun --nproc_per_node N -m hf_unlearn.cli run RECIPE` on CPUs. Batch
sizes are per process: `--num-processes N --gradient-accumulation-steps K` adapt an embedded recipe without a copy.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
from pathlib import Path

from ..recipe import RecipeError, embedded_recipes, load_recipe, parse_override, select_methods, set_override
from ..runtime.launch import BATCH_FLAGS, NUM_PROCESSES_FLAG

__all__ = [
    "add_recipe_arguments",
    "build_parser",
    "flag_overrides",
    "load_task",
    "load_with_overrides",
    "main",
    "recipe_command",
]

# task name -> the module holding its `Task` (`hf_unlearn.runtime.task`), imported only when a recipe names it.
TASKS = {
    "markov": ("hf_unlearn.tasks.markov.task", "MarkovTask"),
    "tofu": ("hf_unlearn.tasks.tofu.task", "TofuTask"),
    "muse": ("hf_unlearn.tasks.muse.task", "MuseTask"),
}


def load_task(name: str):
    """The `Task` of a recipe's `task:` key."""
    module, cls = TASKS[name]
    return getattr(importlib.import_module(module), cls)()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_recipe_arguments(parser: argparse.ArgumentParser, what: str, batch_section: str = "unlearn") -> None:
    """The options every recipe command takes: where things go, `--set` overrides, the batch and process-count
    shortcuts (for the recipe's `batch_section`), `--dry-run`."""
    parser.add_argument("--output-dir", default=None, help="The recipe's output directory (overrides the recipe).")
    parser.add_argument(
        "--models-dir", default=None, help="TOFU: where fine-tuned models are cached (default OUTPUT/models)."
    )
    parser.add_argument(
        "--data-dir", default=None, help="TOFU, MUSE: a local data folder (overrides the recipe's data_dir)."
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a recipe value, e.g. --set unlearn.learning_rate=1e-4 (repeatable; YAML values).",
    )
    batch = parser.add_argument_group(
        "processes and batch (batch sizes are per process: effective batch = per-device x accumulation x processes)"
    )
    for key, flag in BATCH_FLAGS.items():
        batch.add_argument(
            flag,
            dest=key,
            type=_positive_int,
            default=None,
            metavar="N",
            help=f"Sets {batch_section}.{key} (methods that set their own keep it).",
        )
    batch.add_argument(
        NUM_PROCESSES_FLAG,
        dest="num_processes",
        type=_positive_int,
        default=None,
        metavar="N",
        help="Sets launch.num_processes, the process count the batch sizes are written for (a launch with another "
        "count is refused, naming the flags that keep the effective batch).",
    )
    parser.set_defaults(batch_section=batch_section)
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


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The batch and process-count flags as `--set` overrides (applied before the explicit `--set` ones)."""
    overrides = [
        f"{args.batch_section}.{key}={getattr(args, key)}" for key in BATCH_FLAGS if getattr(args, key) is not None
    ]
    if args.num_processes is not None:
        overrides.append(f"launch.num_processes={args.num_processes}")
    return overrides


def recipe_command(args: argparse.Namespace) -> str:
    """The recipe and every option that changes it, as typed again in a launch command (dry-run plans, refusals)."""
    parts = [args.recipe]
    for key, flag in BATCH_FLAGS.items():
        if getattr(args, key) is not None:
            parts += [flag, str(getattr(args, key))]
    if args.num_processes is not None:
        parts += [NUM_PROCESSES_FLAG, str(args.num_processes)]
    for text in args.overrides:
        parts += ["--set", text]
    return shlex.join(parts)


def load_with_overrides(recipe_arg: str, overrides: list[str]) -> dict:
    """The recipe with every `--set KEY=VALUE` applied."""
    if Path(recipe_arg).expanduser().is_dir():  # else "no recipe file", which reads as if nothing were there
        found = sorted(str(path) for path in Path(recipe_arg).expanduser().glob("*.yaml"))
        hint = f" (recipes in it: {', '.join(found[:5])}{', ...' if len(found) > 5 else ''})" if found else ""
        raise IsADirectoryError(f"Recipe {recipe_arg!r} is a folder, not a recipe file: pass a .yaml file{hint}.")
    recipe = load_recipe(recipe_arg)
    for text in overrides:
        path, value = parse_override(text)
        recipe = set_override(recipe, path, value)
    return recipe


def main(args: argparse.Namespace) -> int:
    recipe = load_with_overrides(args.recipe, flag_overrides(args) + args.overrides)
    if args.push_to_hub is not None:
        recipe = set_override(recipe, ["unlearn", "push_to_hub"], True)
        recipe = set_override(recipe, ["unlearn", "hub_model_id"], args.push_to_hub)
    if args.methods is not None:
        recipe = select_methods(recipe, [label.strip() for label in args.methods.split(",") if label.strip()])
    task = recipe.get("task")
    if task not in TASKS:
        raise RecipeError(f"Recipe {args.recipe!r} has task={task!r}; supported tasks: {', '.join(TASKS)}.")
    from ..runtime.task import RunOptions, run_task

    options = RunOptions(
        output_dir=args.output_dir,
        models_dir=args.models_dir,
        data_dir=args.data_dir,
        dry_run=args.dry_run,
        recipe_arg=recipe_command(args),
    )
    run_task(load_task(task), recipe, options)
    return 0
