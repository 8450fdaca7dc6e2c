"""A run killed with SIGKILL in the middle of each stage kind (Markov: a model's training, a method's unlearning;
TOFU: fine-tuning, an evaluation, an unlearning) leaves no result that claims to be complete, and the next run
finishes with the numbers of an uninterrupted run."""

import json
import signal
import subprocess
import sys
import textwrap

import pytest
import yaml

from hf_unlearn.cli import main

from .test_bad_inputs import markov

# The child runs the CLI with `training_step` patched to kill the process at a given step of a given trainer class.
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import transformers
    from hf_unlearn.cli import main

    target, at_step = sys.argv[1], int(sys.argv[2])
    original = transformers.Trainer.training_step

    def training_step(self, *args, **kwargs):
        if type(self).__name__ == target and self.state.global_step + 1 == at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args, **kwargs)

    transformers.Trainer.training_step = training_step
    if target == "generate_answers":  # the TOFU evaluation: killed at its Nth generation pass
        from hf_unlearn.evaluation.tofu import plan as evaluation

        calls, generate = [0], evaluation.generate_answers

        def generate_answers(*args, **kwargs):
            calls[0] += 1
            if calls[0] == at_step:
                os.kill(os.getpid(), signal.SIGKILL)
            return generate(*args, **kwargs)

        evaluation.generate_answers = generate_answers
    sys.exit(main(sys.argv[3:]))
    """
)


def killed_run(tmp_path, recipe, out, target, at_step):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    command = [sys.executable, str(child), target, str(at_step), "run", str(path), "--output-dir", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


def finished_run(tmp_path, recipe, out, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--output-dir", str(out)]) == 0
    capsys.readouterr()
    return json.loads((out / "results.json").read_text())


def metrics(results):
    rows = {name: results[name] for name in ("original", "retrained")}
    rows.update(
        {
            label: {k: v for k, v in row.items() if isinstance(v, float) and k != "unlearn_seconds"}
            for label, row in results["methods"].items()
        }
    )
    return rows


def assert_same_numbers(a, b):
    for name, row in metrics(a).items():
        for key, value in row.items():
            if isinstance(value, float):
                # Two processes train alike to float noise (thread scheduling of reductions), not bit for bit.
                assert value == pytest.approx(metrics(b)[name][key], rel=1e-4, abs=1e-7), (name, key)


@pytest.mark.parametrize("target, at_step", [("Trainer", 2), ("GATrainer", 2)], ids=["model training", "unlearning"])
def test_a_killed_run_never_claims_stale_results_and_the_rerun_finishes(tmp_path, capsys, target, at_step):
    out = tmp_path / "out"
    first = markov()
    finished_run(tmp_path, first, out, capsys)  # an earlier, complete run in the same folder
    changed = markov(train={"learning_rate": 2e-3}, unlearn={"learning_rate": 5e-3})

    killed_run(tmp_path, changed, out, target, at_step)
    left = json.loads((out / "results.json").read_text())
    assert left["complete"] is False
    assert left["settings"]["unlearn"]["learning_rate"] == 5e-3  # the killed run's own (unfinished) record
    assert json.loads((out / "previous" / "results.json").read_text())["complete"] is True  # kept, not lost

    resumed = finished_run(tmp_path, changed, out, capsys)
    reference = finished_run(tmp_path, changed, tmp_path / "uninterrupted", capsys)
    assert resumed["complete"] is True
    assert_same_numbers(resumed, reference)


def tofu_metrics(results):
    rows = {role: results["models"][role]["metrics"] for role in ("target", "retain")}
    rows.update({label: row["metrics"] for label, row in results["methods"].items()})
    return {name: {k: v for k, v in row.items() if isinstance(v, float)} for name, row in rows.items()}


@pytest.mark.parametrize(
    "target, at_step",
    [("SFTTrainer", 2), ("generate_answers", 2), ("GATrainer", 2)],
    ids=["fine-tuning", "evaluation", "unlearning"],
)
def test_a_killed_tofu_run_never_claims_complete_and_the_rerun_matches(tmp_path, capsys, target, at_step):
    from .test_tofu_pipeline import tiny_recipe
    from .tofu_helpers import save_tiny_model

    base = save_tiny_model(tmp_path / "base")
    out = tmp_path / "out"
    recipe = tiny_recipe(base, out, methods={"GA": {}})
    recipe["evaluation"] = {**recipe["evaluation"], "max_items": 3}
    killed_run(tmp_path, recipe, out, target, at_step)
    left = out / "results.json"
    assert not left.exists() or json.loads(left.read_text())["complete"] is False

    resumed = finished_run(tmp_path, recipe, out, capsys)
    reference = finished_run(tmp_path, {**recipe, "output_dir": str(tmp_path / "ref")}, tmp_path / "ref", capsys)
    assert resumed["complete"] is True
    expected = tofu_metrics(reference)
    for name, row in tofu_metrics(resumed).items():
        for key, value in row.items():
            assert value == pytest.approx(expected[name][key], rel=1e-4, abs=1e-7), (name, key)
