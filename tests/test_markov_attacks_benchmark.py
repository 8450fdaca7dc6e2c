"""benchmarks/markov_attacks.py: the recipe it runs (every method at the grid's matched-forgetting settings), the
seeds it varies, and its mean and 95 % interval over seeds, checked by hand and on a tiny run of two seeds."""

import copy
import importlib.util
import json
import math
from pathlib import Path

import pytest

from hf_unlearn.recipe import load_recipe
from hf_unlearn.tasks.markov import parse_markov_recipe, run_markov

from .test_attacks_recipe import ATTACKS
from .test_cli import TINY, write

ROOT = Path(__file__).resolve().parent.parent


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _script("markov_attacks")


def test_mean_and_interval_by_hand(bench):
    stat = bench.mean_ci([1.0, 2.0, 3.0])
    # sample sd 1; t(0.975, 2 degrees of freedom) = 4.302652729911275
    assert stat["mean"] == pytest.approx(2.0)
    assert stat["ci95"] == pytest.approx(4.302652729911275 / math.sqrt(3), rel=1e-9)
    assert stat["n"] == 3
    assert bench.mean_ci([0.5, None])["ci95"] is None and bench.mean_ci([0.5, None])["mean"] == 0.5
    assert bench.mean_ci([None]) is None


def test_recipe_attacks_every_method_at_the_grid_settings(bench):
    """Every method of the grid, each at the grid point kept at the target forget KL (IAU: the η where its curve
    crosses it); the methods that reach it nowhere are exactly the four the recipe says."""
    grid_script = _script("markov_method_grid")
    raw = load_recipe(ROOT / "recipes" / "markov_attacks.yaml")
    recipe = parse_markov_recipe(raw)
    grid = json.loads((ROOT / "benchmarks" / "results" / "markov_method_grid.json").read_text())
    assert list(recipe.methods) == grid_script.GRID_METHODS
    assert recipe.evaluation.stop_at_forget_kl == grid["target"] == bench.TARGET
    assert recipe.evaluation.trajectory_examples == grid["trajectory_examples"]
    assert recipe.attacks is not None and recipe.attacks.controls
    unmatched = []
    for label, spec in recipe.methods.items():
        chosen = grid["methods"][label]["at_forget_kl"][str(grid["target"])]
        if chosen is None:
            unmatched.append(label)
            continue
        if label == "IAU":
            assert spec["learning_rate"] == pytest.approx(float(chosen["run"].split("η=")[1]), abs=5e-4)
            continue
        settings = grid["methods"][label]["grid"][chosen["run"]]["settings"]
        assert {key: spec.get(key) for key in settings} == settings, label
    assert unmatched == ["RMU", "UNDIAL", "ME+GD", "PDU"]


def test_a_seed_changes_only_the_unlearning_and_attack_seeds(bench, tmp_path):
    path = ROOT / "recipes" / "markov_attacks.yaml"
    zero, three = bench.seed_recipe(path, 0, tmp_path), bench.seed_recipe(path, 3, tmp_path)
    assert three.shared_unlearn["seed"] == 3 and three.attacks.seed == 3 and three.attacks.relearn.seed == 3
    assert zero.shared_unlearn["seed"] == 0 and zero.attacks.seed == 0
    assert zero.models_path == three.models_path == tmp_path / "models"  # one original and retrained pair
    assert zero.output_path != three.output_path
    for key in ("data", "model", "train", "original_training_data", "evaluation"):
        assert zero.settings()[key] == three.settings()[key]
    # Seed 0 is the recipe as written (`hf-unlearn run markov_attacks`).
    plain = parse_markov_recipe(load_recipe(path))
    assert plain.shared_unlearn == zero.shared_unlearn and plain.attacks == zero.attacks


def test_two_tiny_seeds_aggregate_to_their_mean(bench, tmp_path):
    raw = copy.deepcopy(TINY)
    raw["methods"] = {"GA": {}, "NPO": {"beta": 1.0, "retain_loss": "none"}}
    raw["attacks"] = {**ATTACKS, "seed": 0, "relearn": {**ATTACKS["relearn"], "seed": 0}}
    path = Path(write(tmp_path, raw))
    runs = {}
    for seed in (0, 1):
        runs[seed] = bench.trimmed(run_markov(bench.seed_recipe(path, seed, tmp_path / "out")))
    assert runs[0]["methods"]["GA"]["trajectory"][0]["step"] == 0
    # Different unlearning orders and relearning subsets give different numbers.
    first = {row["attack"] + str(row["step"]): row for row in runs[0]["methods"]["GA"]["attacks"]["recovery"]}
    second = {row["attack"] + str(row["step"]): row for row in runs[1]["methods"]["GA"]["attacks"]["recovery"]}
    key = "relearn/forget_subset4"
    assert first[key]["recovery"]["forget1_loss"] != second[key]["recovery"]["forget1_loss"]

    summary = bench.aggregate(runs)
    assert summary["seeds"] == [0, 1]
    stat = summary["methods"]["GA"]["recovery"]["relearn/forget_subset@4"]["forget1_loss"]
    values = [first[key]["recovery"]["forget1_loss"], second[key]["recovery"]["forget1_loss"]]
    assert stat["values"] == values
    assert stat["mean"] == pytest.approx(sum(values) / 2)
    # two values: t(0.975, 1) = 12.706204736174698, half-width t · |a − b| / 2
    assert stat["ci95"] == pytest.approx(12.706204736174698 * abs(values[0] - values[1]) / 2, rel=1e-9)
    zero = summary["methods"]["GA"]["recovery"]["relearn/forget_subset@0"]["forget1_loss"]
    assert zero["mean"] == 0 and zero["ci95"] == 0  # nothing relearned yet in any seed
    stop = summary["methods"]["GA"]["stop"]
    assert {seed: stop[seed]["steps"] for seed in stop} == {0: 3, 1: 3}  # TINY: 3 steps, no stop level
    reached = sum(runs[seed]["methods"]["GA"]["trajectory"][-1]["forget_kl"] >= bench.TARGET for seed in (0, 1))
    assert summary["methods"]["GA"]["reached_target"] == f"{reached}/2"
    assert summary["methods"]["GA"]["matched"] == (reached == 2)
    absolute = summary["methods"]["GA"]["absolute_change"]["relearn/unrelated@4"]["values"]
    for seed, value in zip((0, 1), absolute):
        checkpoints = {
            c["step"]: c for c in runs[seed]["methods"]["GA"]["attacks"]["results"]["relearn/unrelated"]["checkpoints"]
        }
        assert value == pytest.approx(checkpoints[4]["forget1_loss"] - checkpoints[0]["forget1_loss"])
    lens = [runs[seed]["methods"]["GA"]["attacks"]["results"]["logit_lens"]["layers"]["forget1"] for seed in (0, 1)]
    best = [min(layer["loss"] for layer in layers[:-1]) for layers in lens]  # intermediate layers only
    assert summary["methods"]["GA"]["logit_lens_best_loss"]["values"] == best
    assert set(summary["controls"]) == {"original", "retrained"}
    bench.plot(summary, tmp_path / "recovery.png", steps=(0, 2, 4))
    assert (tmp_path / "recovery.png").stat().st_size > 1000
    assert "| GA" in bench.tables(summary, steps=(2, 4))
