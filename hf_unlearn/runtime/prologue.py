"""The checks every task run makes before any work, then its lock and its log: the process count the recipe's batch
sizes were written for, the planned Hub pushes, writable folders; then, holding the folders' lock, the run's
`StageLog` started (the earlier run's result files moved aside). Nothing here imports torch at import time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .launch import TrainingBatch

if TYPE_CHECKING:
    from .cache import StageLog

__all__ = ["check_hub", "run_prologue"]


def check_hub(pushes: dict[str, Any]) -> None:
    """Before anything trains: can the planned pushes happen? One line when not (the folders are still written)."""
    if pushes:
        from ..hub import check_pushes
        from .distributed import main_process_print

        problem = check_pushes(pushes.values())
        if problem:
            main_process_print(problem)


@contextmanager
def run_prologue(
    recipe: Any,
    command: str,
    batches: list[TrainingBatch],
    results: Path,
    header: dict[str, Any],
    result_files: tuple[str, ...],
    *,
    device: str | None = None,
    folders: dict[str, Path] | None = None,
    hub: bool = True,
) -> Iterator[StageLog]:
    """The checks every task run makes before any work, then the block runs holding the folders' lock with the run's
    log: the process count the batches were written for, the Hub pushes (`hub`), folders (`folders`: what -> path;
    default: the recipe's output and models folders) that are writable and not the user's own
    (`io.check_own_folder`), then marked as a run's (`io.claim_folder`); the block gets the `StageLog` of `results`
    (`StageLog.start`: `header`, the environment, `complete: false`; the earlier run's `result_files` moved aside)."""
    from .cache import StageLog
    from .distributed import is_main_process, require_num_processes
    from .io import check_own_folder, check_writable_folder, claim_folder
    from .lock import hold_output_lock

    if folders is None:
        folders = {"output folder": Path(recipe.output_path), "models folder": Path(recipe.models_path)}
    require_num_processes(recipe.launch.num_processes, command, batches)
    if hub:
        check_hub(recipe.hub)
    if is_main_process():
        for what, folder in folders.items():
            check_own_folder(folder, what)  # the user's own files there are never replaced
            check_writable_folder(folder, what)
    with hold_output_lock(*folders.values()):
        if is_main_process():
            for folder in folders.values():
                claim_folder(folder, command)
        yield StageLog.start(results, header, result_files, device=device)
