"""How a run was launched, checked before any work: the process count against the recipe's, and an `accelerate
launch` that silently started fewer processes than it was asked for.

Batch sizes in a recipe are per process, so the same recipe on another number of processes trains with another
effective batch (per_device_train_batch_size x gradient_accumulation_steps x processes). A launch with another count
is refused, with the exact flags that keep the effective batch. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BATCH_FLAGS",
    "NUM_PROCESSES_FLAG",
    "LaunchError",
    "TrainingBatch",
    "check_accelerate_launch",
    "is_other_rank",
    "keep_effective_batch",
    "method_batches",
    "process_count_error",
    "quiet_other_ranks",
    "requested_accelerate_processes",
    "training_batch",
]

# The CLI flags of `hf-unlearn run` / `finetune` (one home: the parser and the messages use these names).
BATCH_FLAGS = {
    "per_device_train_batch_size": "--per-device-train-batch-size",
    "gradient_accumulation_steps": "--gradient-accumulation-steps",
}
NUM_PROCESSES_FLAG = "--num-processes"


class LaunchError(ValueError):
    """A launch that would not train what the recipe says (one line: what to run instead)."""


@dataclass(frozen=True)
class TrainingBatch:
    """One training stage's batch settings: `where` is the recipe section (`unlearn`, `finetune`, `methods.GA`);
    `flags` says whether the command's --per-device-train-batch-size / --gradient-accumulation-steps set it."""

    where: str
    per_device: int
    accumulation: int = 1
    flags: bool = False

    def effective(self, processes: int) -> int:
        return self.per_device * self.accumulation * processes


def training_batch(where: str, settings: dict[str, Any], config_class: type, flags: bool = False) -> TrainingBatch:
    """The batch of a recipe section (`settings`: its raw values) for a config dataclass (`TrainingArguments`,
    `SFTConfig`, a method's config), whose defaults fill what the section leaves out."""
    defaults = {field.name: field.default for field in dataclasses.fields(config_class)}
    values = [int(settings[key]) if settings.get(key) is not None else int(defaults[key]) for key in BATCH_FLAGS]
    return TrainingBatch(where, *values, flags=flags)


def method_batches(
    shared: dict[str, Any], specs: dict[str, dict[str, Any]], config_classes: dict[str, type], flags: bool
) -> list[TrainingBatch]:
    """The shared `unlearn` batch, and that of each method entry that sets its own (`methods.LABEL`)."""
    first = config_classes[next(iter(specs))] if specs else None
    batches = [training_batch("unlearn", shared, first, flags)] if first is not None else []
    for label, spec in specs.items():
        if any(key in spec for key in BATCH_FLAGS):
            batches.append(training_batch(f"methods.{label}", {**shared, **spec}, config_classes[label]))
    return batches


def keep_effective_batch(per_device: int, accumulation: int, wanted: int, launched: int) -> tuple[int, int] | None:
    """`(per_device, accumulation)` on `launched` processes with the effective batch of the recipe on `wanted`:
    the largest per-process batch that is no larger than the recipe's (it fits in memory) and divides the batch;
    None when the effective batch does not split evenly over `launched` processes."""
    total = per_device * accumulation * wanted
    if total % launched:
        return None
    per_process = total // launched
    batch = max(b for b in range(1, min(per_device, per_process) + 1) if per_process % b == 0)
    return batch, per_process // batch


def process_count_error(wanted: int, launched: int, batches: list[TrainingBatch], command: str) -> LaunchError:
    """The one-line refusal of a launch with `launched` processes for a recipe written for `wanted`."""
    flags, sets, kept, unsplittable = [f"{NUM_PROCESSES_FLAG} {launched}"], [], [], []
    for batch in batches:
        kept.append(f"{batch.where} {batch.effective(wanted)}")
        new = keep_effective_batch(batch.per_device, batch.accumulation, wanted, launched)
        if new is None:
            unsplittable.append(batch.where)
            continue
        for key, old, value in zip(BATCH_FLAGS, (batch.per_device, batch.accumulation), new):
            if value != old:
                (flags if batch.flags else sets).append(
                    f"{BATCH_FLAGS[key]} {value}" if batch.flags else f"--set {batch.where}.{key}={value}"
                )
    prefix = (
        f"{launched} process(es) were launched but the recipe's batch sizes are per process for "
        f"launch.num_processes = {wanted}"
    )
    start = (
        f"`torchrun --nproc_per_node {wanted} -m hf_unlearn.cli {command}` (GPUs: accelerate launch --num_processes "
        f"{wanted})"
        if wanted > 1
        else f"`hf-unlearn {command}` in one process"
    )
    if unsplittable:
        return LaunchError(
            f"{prefix}, and the effective batch of {', '.join(unsplittable)} does not split evenly over {launched} "
            f"processes: run {start}, or add `{NUM_PROCESSES_FLAG} {launched}` with batch sizes of your choice."
        )
    effective = f" ({', '.join(kept)})" if kept else ""
    return LaunchError(
        f"{prefix}: to keep the effective batch{effective} on {launched} processes add "
        f"`{' '.join(flags + sets)}`, or run {start}."
    )


# ------------------------------------------------------------------------------------------------ accelerate launch


def requested_accelerate_processes(parent_argv: list[str]) -> int | None:
    """The process count an `accelerate launch` command line asks for (its --num_processes, else that of its config
    file or accelerate's default config), or None when `parent_argv` is not `accelerate launch`."""
    names = [Path(arg).name for arg in parent_argv]
    if "accelerate-launch" in names:
        rest = parent_argv[names.index("accelerate-launch") + 1 :]
    elif "accelerate" in names and "launch" in parent_argv[names.index("accelerate") + 1 :][:1]:
        rest = parent_argv[names.index("accelerate") + 2 :]
    elif "accelerate.commands.launch" in parent_argv:
        rest = parent_argv[parent_argv.index("accelerate.commands.launch") + 1 :]
    else:
        return None
    from accelerate.commands.config.config_args import default_config_file, load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    try:
        args = launch_command_parser().parse_args(rest)
    except SystemExit:  # not a command line accelerate itself would have accepted: nothing to say
        return None
    if args.num_processes is not None:
        return int(args.num_processes)
    config = args.config_file or (default_config_file if os.path.isfile(default_config_file) else None)
    if config is None or (args.cpu and args.config_file is None):
        return 1
    return int(load_config_from_file(config).num_processes or 1)


def _parent_argv() -> list[str]:
    try:
        return Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:  # not Linux: no check
        return []


def check_accelerate_launch(argv: list[str] | None = None, parent_argv: list[str] | None = None) -> None:
    """Refuse a single process started by `accelerate launch` that was asked for several, and an FSDP or DeepSpeed
    launch on CPUs (where accelerate would silently fall back to DDP).

    accelerate starts one plain process (its "simple launcher", which sets ACCELERATE_USE_CPU but no WORLD_SIZE) unless
    it sees several GPUs or is told --multi_gpu, whatever --num_processes says; the run would silently train alone
    with the batch of one process. On CPUs `torchrun` starts them."""
    command = shlex.join(sys.argv[1:] if argv is None else argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    sharding = [
        name
        for name, variable in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
        if os.environ.get(variable, "").lower() == "true"
    ]
    if sharding and world > 1:
        import torch

        if not torch.cuda.is_available():  # accelerate shards on GPUs only: on CPUs it would run plain DDP
            raise LaunchError(
                f"accelerate launch with {sharding[0]} on a machine without GPUs would train with plain DDP "
                f"instead: run `torchrun --nproc_per_node {world} -m hf_unlearn.cli {command}` (DDP on CPUs)."
            )
    if "ACCELERATE_USE_CPU" not in os.environ or world > 1:
        return
    wanted = requested_accelerate_processes(_parent_argv() if parent_argv is None else parent_argv)
    if wanted is None or wanted <= 1:
        return
    raise LaunchError(
        f"accelerate launch was asked for {wanted} processes but started one (it starts several only with several "
        f"GPUs or --multi_gpu): on CPUs run `torchrun --nproc_per_node {wanted} -m hf_unlearn.cli {command}`."
    )


# ------------------------------------------------------------------------------------------------ one log per launch


def is_other_rank() -> bool:
    """A process of a multi-process launch other than the main one (from the launcher's environment)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("RANK", "0") != "0"


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def quiet_other_ranks() -> None:
    """On every process but the main one, keep errors only: the ranks run the same code on the same settings, so
    their warnings and progress bars repeat the main process's. Call before torch is imported (its C++ warnings read
    TORCH_CPP_LOG_LEVEL once). transformers' Trainer resets its log level per process (`log_level_replica`), so the
    filter sits on its handler, which that does not touch."""
    if not is_other_rank():
        return
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):  # read at import: set first
        os.environ.setdefault(name, "1")
    warnings.simplefilter("ignore")
    from transformers.utils import logging as hf_logging

    for handler in hf_logging.get_logger().handlers:  # the library root logger, configured by this call
        handler.addFilter(_ErrorsOnly())
    logging.getLogger("hf_unlearn").setLevel(logging.ERROR)
