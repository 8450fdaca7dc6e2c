"""Cached, resumable pipeline stages: a folder per stage, stamped with the fingerprint of everything it was made from.

A stage (a fine-tuned model, an unlearned model) is reused only when its stamp matches the fingerprint exactly, and
the log says so; otherwise it is recomputed (and the log says why). Work happens in a scratch folder `.NAME.partial`
beside the stage, which replaces the stage folder only once complete, so an interrupted run never leaves a
half-written model behind; a scratch folder with the same fingerprint is kept, so a trainer can resume from its
checkpoints in the next session.

Under `accelerate launch` / `torchrun` every process takes the same decisions (each reads the stamps before any
process writes, and writes are followed by a barrier); only the main process writes.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .distributed import is_main_process, main_process_print, num_processes, wait_for_everyone
from .hashing import folder_sha256, sha256_json
from .io import atomic_write_json

__all__ = [
    "NOT_RESULT_SETTINGS",
    "STAMP_FILE",
    "StageLog",
    "cached_stage",
    "check_replaceable",
    "commit_stage",
    "diff_fingerprints",
    "fingerprint_settings",
    "normalise",
    "open_scratch",
    "read_stamp",
    "resume_checkpoint",
    "retire_previous_results",
    "stage_status",
]

STAMP_FILE = "hf_unlearn_stage.json"


# Training settings that never change what a stage computes: how often and where it logs and saves, the progress
# bar, the Hub. They stay out of fingerprints, so changing them reuses the stage (checkpoints matter only with
# `load_best_model_at_end`, which picks the model among them: then the save settings stay in).
NOT_RESULT_SETTINGS = frozenset(
    {
        "output_dir",
        "overwrite_output_dir",
        "logging_dir",
        "logging_steps",
        "logging_strategy",
        "logging_first_step",
        "logging_nan_inf_filter",
        "log_level",
        "log_level_replica",
        "log_on_each_node",
        "report_to",
        "run_name",
        "project",
        "trackio_space_id",
        "trackio_bucket_id",
        "trackio_static_space_id",
        "disable_tqdm",
        "save_steps",
        "save_strategy",
        "save_total_limit",
        "save_only_model",
        "save_safetensors",
        "save_on_each_node",
        "skip_memory_metrics",
        "include_tokens_per_second",
        "include_num_input_tokens_seen",
        "push_to_hub",
        "hub_model_id",
        "hub_strategy",
        "hub_token",
        "hub_private_repo",
        "hub_always_push",
        "hub_revision",
        "dataloader_pin_memory",
    }
)
_SAVE_SETTINGS = frozenset({"save_steps", "save_strategy", "save_total_limit", "save_only_model"})


def fingerprint_settings(settings: dict[str, Any], default_batch: int | None = 8) -> dict[str, Any]:
    """Training settings as a stage fingerprint holds them: only what changes the result (`NOT_RESULT_SETTINGS` left
    out), and the batch per optimizer step instead of per process (batch 8 in one process and 4 in each of two train
    alike and share a fingerprint; 8 in each of two do not). `default_batch`: the per-process batch when `settings`
    name none (TrainingArguments' 8); None for overrides that may leave it out."""
    keep = _SAVE_SETTINGS if settings.get("load_best_model_at_end") else frozenset()
    settings = {key: value for key, value in settings.items() if key not in NOT_RESULT_SETTINGS or key in keep}
    world = num_processes()
    batch = settings.get("per_device_train_batch_size", default_batch)
    if world == 1 or batch is None:
        return settings
    return {**settings, "per_device_train_batch_size": batch * world}


def normalise(payload: Any) -> Any:
    """As it reads back from JSON (tuples become lists, paths strings), so stamps compare equal."""
    return json.loads(json.dumps(payload, sort_keys=True, default=str))


def diff_fingerprints(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """The top-level keys in which two fingerprints differ (the one comparison every cached result goes through)."""
    old, new = normalise(old or {}), normalise(new)
    return sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))


def read_stamp(path: Path) -> dict[str, Any] | None:
    stamp = Path(path) / STAMP_FILE
    try:
        return json.loads(stamp.read_text()) if stamp.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def stage_status(path: Path, fingerprint: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """`(stamp, why)`: the stamp when `path` holds a finished stage made from exactly `fingerprint`, else None."""
    stamp = read_stamp(path)
    if stamp is None:
        return None, "not computed yet"
    differ = diff_fingerprints(stamp.get("fingerprint"), fingerprint)
    if not differ and stamp.get("complete"):
        changed = _changed_files(Path(path), stamp.get("files_sha256"))
        if changed:
            return None, f"changed after it was made ({', '.join(changed)} no longer hash the same)"
        return stamp, "same fingerprint"
    if not differ:
        return None, "left incomplete by an interrupted run"
    return None, f"made with other settings ({', '.join(differ)} differ)"


def cached_stage(path: Path, fingerprint: dict[str, Any], what: str) -> dict[str, Any] | None:
    """The stamp of a reusable stage (and a log line saying it is reused), or None (and a log line saying why not).

    Raises:
        FileExistsError: `path` holds files no run made (no stamp): they are never replaced."""
    check_replaceable(path, what)
    stamp, why = stage_status(path, fingerprint)
    if stamp is not None:
        main_process_print(f"Reusing the cached {what} at {path} ({why}, computed in {stamp.get('seconds', 0):.0f} s).")
    elif why != "not computed yet":
        main_process_print(f"The cached {what} at {path} was {why}: recomputing it.")
    return stamp


def open_scratch(path: Path, fingerprint: dict[str, Any]) -> Path:
    """The scratch folder of stage `path`: kept if an interrupted run left it with the same fingerprint (so its
    checkpoints can be resumed), else emptied. Main process only creates or empties; all wait."""
    path = Path(path)
    scratch = path.with_name(f".{path.name}.partial")
    if is_main_process():
        stamp = read_stamp(scratch)
        if stamp is None or diff_fingerprints(stamp.get("fingerprint"), fingerprint):
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            atomic_write_json(scratch / STAMP_FILE, {"fingerprint": normalise(fingerprint), "complete": False})
    wait_for_everyone()
    return scratch


def commit_stage(
    scratch: Path,
    path: Path,
    fingerprint: dict[str, Any],
    record: dict[str, Any],
    drop: tuple[str, ...] = ("checkpoint-*",),
) -> dict[str, Any]:
    """Stamp the finished scratch folder (with `record`: seconds, ...) and swap it in for `path`; returns the stamp.

    `drop` lists glob patterns (relative to the scratch folder, any depth) removed first: trainer checkpoints are only
    needed to resume an unfinished stage."""
    stamp = {
        "fingerprint": normalise(fingerprint),
        "fingerprint_sha256": sha256_json(normalise(fingerprint)),
        "complete": True,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **record,
    }
    if is_main_process():
        for pattern in drop:
            for match in sorted(Path(scratch).rglob(pattern)):
                shutil.rmtree(match, ignore_errors=True) if match.is_dir() else match.unlink(missing_ok=True)
        # The content of what was made: a file replaced later (even by one of the same size) voids the stage.
        stamp["files_sha256"] = folder_sha256(scratch)
        atomic_write_json(Path(scratch) / STAMP_FILE, stamp)
        check_replaceable(path)  # the user's files put there while this stage ran are kept (the scratch stays)
        shutil.rmtree(path, ignore_errors=True)
        Path(scratch).rename(path)
    wait_for_everyone()
    return stamp


def check_replaceable(path: Path, what: str = "stage") -> None:
    """A stage folder may be replaced only when a run made it: missing, empty, or stamped (`STAMP_FILE`).

    Raises:
        FileExistsError: naming the folder, which holds files without a stamp (the user's own model, say)."""
    path = Path(path)
    if path.is_dir() and not (path / STAMP_FILE).is_file() and any(path.iterdir()):
        raise FileExistsError(
            f"{path} (the {what}'s folder) holds files hf-unlearn did not write (no {STAMP_FILE}): they are never "
            "replaced. Move them, or choose another output folder."
        )


def resume_checkpoint(folder: str | Path, what: str) -> str | None:
    """The last complete Trainer checkpoint in `folder` to resume `what` from (None: start afresh), saying which.

    A checkpoint is complete when its `trainer_state.json` (the Trainer writes it last) reads back: a run killed while
    saving (SIGKILL, a full disk) leaves one without it, which the Trainer cannot resume from. Such checkpoints are
    removed (main process; they are the stage's own scratch) and the run resumes from the one before, or restarts."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    steps = {}
    for entry in folder.glob("checkpoint-*"):
        if entry.is_dir() and entry.name.removeprefix("checkpoint-").isdigit():
            steps[int(entry.name.removeprefix("checkpoint-"))] = entry
    incomplete = []
    for step in sorted(steps, reverse=True):
        checkpoint = steps[step]
        try:
            json.loads((checkpoint / "trainer_state.json").read_text())
        except (OSError, ValueError):
            incomplete.append(checkpoint)
            continue
        if incomplete:
            names = ", ".join(entry.name for entry in incomplete)
            main_process_print(f"{names} of {what} is incomplete (no readable trainer_state.json): skipped.")
            _remove(incomplete)
        main_process_print(f"Resuming {what} from {checkpoint}.")
        return str(checkpoint)
    if incomplete:
        names = ", ".join(entry.name for entry in incomplete)
        main_process_print(
            f"{names} of {what} is incomplete (no readable trainer_state.json; the run was stopped while saving it): "
            "starting it afresh."
        )
        _remove(incomplete)
    return None


def _remove(folders: list[Path]) -> None:
    if is_main_process():
        for entry in folders:
            shutil.rmtree(entry, ignore_errors=True)
    wait_for_everyone()


def _changed_files(path: Path, recorded: dict[str, str] | None) -> list[str]:
    """Model files of a stage whose content differs from what its stamp recorded (stamps without a record: none)."""
    if recorded is None:
        return []
    now = folder_sha256(path)
    return sorted(name for name in set(recorded) | set(now) if recorded.get(name) != now.get(name))


def retire_previous_results(output_dir: Path, names: tuple[str, ...]) -> list[str]:
    """Move the result files of an earlier run (`results.json`, plots, tables) into `output_dir/previous/` before
    a new run starts, so that an interrupted run never leaves the old results looking like its own; returns the
    names moved. Main process only; nothing is deleted but an older `previous/` copy of the same name."""
    moved = []
    if is_main_process():
        for name in names:
            source = Path(output_dir) / name
            if source.is_file():
                target = Path(output_dir) / "previous" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                source.replace(target)
                moved.append(name)
        if moved:
            main_process_print(f"Moved the previous run's {', '.join(moved)} to {Path(output_dir) / 'previous'}.")
    wait_for_everyone()
    return moved


class StageLog:
    """Wall time of every stage of a run, in `results.json` after every stage (written atomically, `complete: false`
    until the end), so an interrupted run still shows what it finished and how long each part took.

    Each entry: `seconds` (this run's wall time, including loading), `reused`, and `compute_seconds` (the time the
    stage took when it was computed, read from its stamp when reused)."""

    def __init__(self, path: Path, payload: dict[str, Any]):
        self.path = Path(path)
        self.payload = payload
        self.payload.setdefault("stages", {})
        self.started = time.perf_counter()

    @classmethod
    def start(
        cls, path: Path, header: dict[str, Any], result_files: tuple[str, ...], device: str | None = None
    ) -> StageLog:
        """The log of a new run, written at once (`complete: false`) with `header` and the environment (package
        versions, threads, device). The earlier run's `result_files` (in `path`'s folder) move to `previous/` first:
        an interrupted run must not leave them looking like its own."""
        import torch

        from .versions import environment_versions

        retire_previous_results(Path(path).parent, result_files)
        environment = {**environment_versions(), "threads": torch.get_num_threads(), "device": device or "cpu"}
        log = cls(path, {**header, "environment": environment})
        log.save(complete=False)
        return log

    @contextmanager
    def stage(self, name: str):
        entry: dict[str, Any] = {"reused": False}
        tick = time.perf_counter()
        yield entry
        entry["seconds"] = time.perf_counter() - tick
        entry.setdefault("compute_seconds", None if entry["reused"] else entry["seconds"])
        self.payload["stages"][name] = entry
        self.save(complete=False)

    def save(self, complete: bool) -> None:
        self.payload["complete"] = complete
        self.payload["total_seconds"] = time.perf_counter() - self.started
        if is_main_process():
            atomic_write_json(self.path, self.payload)
