"""Processes of a launch (`torchrun`, `accelerate launch`): the one home of the pipelines' distributed helpers.

Built on accelerate's `PartialState`. On CPUs accelerate only joins a process group when told to use the CPU
(`ACCELERATE_USE_CPU`); under `torchrun` (or `accelerate launch --multi_gpu`) without GPUs we set it before the state
is created, else every process would silently train alone on all the data. (`accelerate launch --num_processes N`
without GPUs starts one process: `runtime.launch.check_accelerate_launch` refuses it.)
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .launch import TrainingBatch, process_count_error

__all__ = [
    "broadcast_object",
    "configure_launch_environment",
    "is_main_process",
    "join_process_group",
    "leave_process_group",
    "main_process_print",
    "num_processes",
    "require_num_processes",
    "wait_for_everyone",
]


def configure_launch_environment() -> None:
    """Call before anything creates accelerate's state (building `TrainingArguments` does): under a multi-process
    launch on CPUs, tell accelerate to use the CPU so that it joins the group data-parallel."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


def _state():
    configure_launch_environment()
    from accelerate import PartialState

    return PartialState(cpu=os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"))


def join_process_group() -> str | None:
    """Join the launch's process group; returns this process's device, or None for one process without a GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not torch.cuda.is_available():
        return None
    state = _state()
    if state.num_processes != world:
        raise RuntimeError(
            f"accelerate sees {state.num_processes} process(es) of the {world} launched: its state was "
            "created before the process group was joined. Set ACCELERATE_USE_CPU=true on CPUs, or call "
            "hf_unlearn.runtime.distributed.join_process_group() first."
        )
    return "cpu" if state.device.type == "cpu" else str(state.device)


def leave_process_group() -> None:
    """Tear the process group down at the end of a command (no-op for one process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def num_processes() -> int:
    return _state().num_processes if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 1


def is_main_process() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _state().is_main_process


def wait_for_everyone() -> None:
    if num_processes() > 1:
        _state().wait_for_everyone()


def broadcast_object(value: Any) -> Any:
    """The main process's `value` on every process."""
    if num_processes() == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


def main_process_print(*args: Any) -> None:
    """`print` on the main process only (flushed): one log line per launch, not one per rank."""
    if is_main_process():
        print(*args, flush=True)


def require_num_processes(wanted: int, command: str, batches: list[TrainingBatch] = ()) -> None:
    """Refuse a launch whose process count differs from the recipe's `launch.num_processes`: batch sizes are per
    process, so another count would silently train with another effective batch (and reuse nothing cached). The
    message names the flags that keep the effective batch of each stage in `batches`."""
    launched = num_processes()
    if launched != wanted:
        raise process_count_error(wanted, launched, list(batches), command)
