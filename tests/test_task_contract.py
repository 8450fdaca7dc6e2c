"""The task contract (`hf_unlearn.runtime.task`): a task that fills in the interface gets the prologue, the stage log
and the reports from `run_task`; Markov and TOFU both implement it."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hf_unlearn.cli.run import TASKS, load_task
from hf_unlearn.evaluation.callback import trajectory_record
from hf_unlearn.recipe import LaunchArguments, RecipeError
from hf_unlearn.runtime.cache import cached_stage, commit_stage, open_scratch
from hf_unlearn.runtime.task import RunOptions, Task, run_task


@dataclass
class CountRecipe:
    output_path: Path
    models_path: Path
    steps: int = 3
    seed: int = 0
    launch: LaunchArguments = field(default_factory=LaunchArguments)
    hub: dict = field(default_factory=dict)

    def settings(self):
        return {"steps": self.steps}


class CountTask(Task):
    """The smallest task: one cached stage that writes a number, one report."""

    name = "count"
    result_files = ("results.json", "report.txt")

    def __init__(self, seen_incomplete=None):
        self.seen_incomplete = seen_incomplete

    def parse(self, raw, options):
        if raw.get("steps", 3) < 1:
            raise RecipeError("steps must be >= 1")
        out = Path(options.output_dir)
        return CountRecipe(out, out / "models", steps=raw.get("steps", 3))

    def describe(self, recipe, options):
        return f"count to {recipe.steps}"

    def batches(self, recipe):
        return []

    def run_stages(self, recipe, log, options):
        path = recipe.models_path / "count"
        with log.stage("count") as entry:
            fingerprint = {"steps": recipe.steps}
            stamp = cached_stage(path, fingerprint, "count")
            entry["reused"] = stamp is not None
            if stamp is None:
                scratch = open_scratch(path, fingerprint)
                (scratch / "value.json").write_text(json.dumps(recipe.steps))
                stamp = commit_stage(scratch, path, fingerprint, {"seconds": 0.0})
        on_disk = json.loads((recipe.output_path / "results.json").read_text())
        self.seen_incomplete = on_disk["complete"] is False and "count" in on_disk["stages"]
        log.payload["value"] = json.loads((path / "value.json").read_text())

    def write_reports(self, recipe, log):
        (recipe.output_path / "report.txt").write_text(f"value {log.payload['value']}\n")


def test_a_task_that_fills_in_the_interface_runs_through_run_task(tmp_path, capsys):
    task = CountTask()
    payload = run_task(task, {"steps": 4}, RunOptions(output_dir=str(tmp_path / "out")))
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results == payload
    assert results["complete"] is True and results["task"] == "count" and results["settings"] == {"steps": 4}
    assert results["value"] == 4 and results["stages"]["count"]["reused"] is False
    assert task.seen_incomplete  # results.json said complete: false while the stages ran
    assert (tmp_path / "out" / "report.txt").read_text() == "value 4\n"

    # A re-run reuses the stage and moves the earlier results aside; a dry run describes; a bad recipe is refused.
    again = run_task(CountTask(), {"steps": 4}, RunOptions(output_dir=str(tmp_path / "out")))
    assert again["stages"]["count"]["reused"] is True
    assert (tmp_path / "out" / "previous" / "report.txt").is_file()
    capsys.readouterr()
    assert run_task(CountTask(), {"steps": 5}, RunOptions(output_dir=str(tmp_path / "dry"), dry_run=True)) is None
    assert "count to 5" in capsys.readouterr().out and not (tmp_path / "dry" / "results.json").exists()
    with pytest.raises(RecipeError, match="steps must be >= 1"):
        run_task(CountTask(), {"steps": 0}, RunOptions(output_dir=str(tmp_path / "bad")))


def test_markov_and_tofu_implement_the_contract():
    for name in TASKS:
        task = load_task(name)
        assert isinstance(task, Task) and task.name == name and "results.json" in task.result_files


def test_trajectory_record_reads_any_trajectory_callback():
    from types import SimpleNamespace

    trajectory = SimpleNamespace(history=[{"step": 0, "forget_kl": 0.0}], seconds=1.5)
    stop = SimpleNamespace(stopped={"step": 3})
    assert trajectory_record([trajectory, stop, object()]) == {
        "history": [{"step": 0, "forget_kl": 0.0}],
        "eval_seconds": 1.5,
        "stopped": {"step": 3},
    }
