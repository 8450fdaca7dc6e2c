"""`hf-unlearn` command line: one sub-command per module of this package, imported only when it runs.

`hf-unlearn --help` and a recipe error answer at once: nothing here imports torch or transformers until a command
needs them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

# name -> (module, one-line help). Each module exposes `build_parser(prog)` and `main(args) -> int`.
SUBCOMMANDS = {
    "run": ("hf_unlearn.cli.run", "Run a recipe end to end (default: the embedded Markov benchmark)."),
    "finetune": ("hf_unlearn.cli.finetune", "Fine-tune the target and retain models of a TOFU recipe (TRL SFT)."),
    "eval": ("hf_unlearn.cli.eval", "Evaluate a model on TOFU (every metric of docs/metrics.md)."),
    "attack": ("hf_unlearn.cli.attack", "Attack an unlearned model (relearning, quantization, probes): recovery."),
}
# Errors that describe bad input or a failed run in one sentence; anything else keeps its traceback.
KNOWN_ERRORS = (
    ValueError,
    TypeError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
    OSError,  # includes missing files, permissions, full disks and connection errors: their message says it all
    FloatingPointError,
    KeyboardInterrupt,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-unlearn",
        description="Machine unlearning for Hugging Face language models.",
        epilog="Run `hf-unlearn COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="Show the full traceback of an error.")
    parser.add_argument(
        "command",
        choices=list(SUBCOMMANDS),
        metavar="COMMAND",
        help="; ".join(f"{name}: {text}" for name, (_, text) in SUBCOMMANDS.items()),
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    top = build_parser().parse_args(argv)
    debug = top.debug or os.environ.get("HF_UNLEARN_DEBUG") == "1"
    from ..runtime.launch import LaunchError, check_accelerate_launch, is_other_rank, quiet_other_ranks

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun / accelerate launch
        quiet_other_ranks()  # before torch is imported: one log per launch, not one per rank
        from ..runtime.distributed import configure_launch_environment

        configure_launch_environment()
    module = importlib.import_module(SUBCOMMANDS[top.command][0])
    args = module.build_parser(f"hf-unlearn {top.command}").parse_args(top.args)
    from ..runtime.lock import OutputFolderLocked

    try:
        check_accelerate_launch(argv)
        return module.main(args) or 0
    except (*KNOWN_ERRORS, OutputFolderLocked) as error:
        if debug:
            raise
        from ..recipe import RecipeError

        if is_other_rank() and isinstance(error, (RecipeError, LaunchError)):
            # Every rank found the same problem in the same recipe: the main process says it once (a moment's
            # wait, so that the launcher does not stop the main process before it has).
            time.sleep(3)
            return 2
        if isinstance(error, KeyboardInterrupt):
            print(
                f"hf-unlearn {top.command}: interrupted (finished stages are kept; run it again to resume).",
                file=sys.stderr,
            )
            return 130
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"hf-unlearn {top.command}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2
    finally:
        if "torch" in sys.modules:  # only a command that imported torch can have joined a process group
            from ..runtime.distributed import leave_process_group

            leave_process_group()


if __name__ == "__main__":
    sys.exit(main())
