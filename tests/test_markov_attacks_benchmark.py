"""benchmarks/markov_attacks.py: the recipe it runs (every method at the grid's matched-forgetting settings), the
seeds it varies, and its mean and 95 % interval over seeds, checked by hand and on a tiny run of two seeds. The script
runs through its command line, writing into the test's folders (never into the committed results)."""

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from hf_unlearn.recipe import load_recipe
from hf_unlearn.tasks.markov import parse_markov_recipe

from .test_attacks_recipe import ATTACKS
from .test_cli import TINY, write

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "benchmarks" / "results" / "markov_attacks.json"


def run_script(tmp: Path, *argv: str) -> str:
    """`python benchmarks/markov_attacks.py ARGV` with its results and plot in `tmp`; its printed tables."""
    command = [sys.executable, "benchmarks/markov_attacks.py", *argv]
    command += ["--results-dir", str(tmp / "results"), "--plot", str(tmp / "recovery.png")]
    command += ["--table-steps", "2", "4", "--plot-steps", "0", "2", "4"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two seeds of a tiny recipe (GA and NPO, every attack): the seed files, the summary and the tables."""
    tmp = tmp_path_factory.mktemp("markov_attacks")
    raw = copy.deepcopy(TINY)
    raw["methods"] = {"GA": {}, "NPO": {"beta": 1.0, "retain_loss": "none"}}
    raw["attacks"] = {**ATTACKS, "seed": 0, "relearn": {**ATTACKS["relearn"], "seed": 0}}
    recipe = write(tmp, raw)
    committed = COMMITTED.read_bytes()
    tables = run_script(tmp, "--recipe", recipe, "--seeds", "0", "1", "--output-dir", str(tmp / "out"))
    assert COMMITTED.read_bytes() == committed
    runs = {seed: json.loads((tmp / "results" / f"markov_attacks_seed{seed}.json").read_text()) for seed in (0, 1)}
    summary = json.loads((tmp / "results" / "markov_attacks.json").read_text())
    return {"tmp": tmp, "runs": runs, "summary": summary, "tables": tables}


def test_mean_and_interval_by_hand(tiny, tmp_path):
    """Three seed files whose values are set by hand, re-tabulated with `--aggregate-only`."""
    results = tmp_path / "results"
    results.mkdir()
    seeds = [copy.deepcopy(tiny["runs"][0]), copy.deepcopy(tiny["runs"][1]), copy.deepcopy(tiny["runs"][0])]
    for seed, (run, value) in enumerate(zip(seeds, (1.0, 2.0, 3.0))):
        run["seed"] = seed
        row = next(
            r for r in run["methods"]["GA"]["attacks"]["recovery"] if (r["attack"], r["step"]) == ("relearn/related", 4)
        )
        row["recovery"]["forget1_loss"] = value
        row["recovery"]["forget_loss"] = 0.5 if seed == 0 else None  # one value
        row["recovery"]["forget_kl"] = None  # none
        (results / f"markov_attacks_seed{seed}.json").write_text(json.dumps(run))
    run_script(tmp_path, "--aggregate-only", "--seeds", "0", "1", "2", "--output-dir", str(tmp_path / "none"))
    summary = json.loads((results / "markov_attacks.json").read_text())
    assert summary["seeds"] == [0, 1, 2]
    stats = summary["methods"]["GA"]["recovery"]["relearn/related@4"]
    # sample sd 1; t(0.975, 2 degrees of freedom) = 4.302652729911275
    assert stats["forget1_loss"]["mean"] == pytest.approx(2.0)
    assert stats["forget1_loss"]["ci95"] == pytest.approx(4.302652729911275 / math.sqrt(3), rel=1e-9)
    assert stats["forget1_loss"]["n"] == 3 and stats["forget1_loss"]["values"] == [1.0, 2.0, 3.0]
    assert stats["forget_loss"]["ci95"] is None and stats["forget_loss"]["mean"] == 0.5
    assert stats["forget_loss"]["n"] == 1
    assert stats["forget_kl"] is None


def test_recipe_attacks_every_method_at_the_grid_settings():
    """Every method of the grid, each at the grid point kept at the target forget KL (IAU: the η where its curve
    crosses it); the methods that reach it nowhere are exactly the four the recipe says."""
    raw = load_recipe(ROOT / "recipes" / "markov_attacks.yaml")
    recipe = parse_markov_recipe(raw)
    grid = json.loads((ROOT / "benchmarks" / "results" / "markov_method_grid.json").read_text())
    assert len(grid["methods"]) == 16  # the grid's results hold every method of the grid
    assert list(recipe.methods) == list(grid["methods"])
    target = json.loads(COMMITTED.read_text())["target_forget_kl"]
    assert recipe.evaluation.stop_at_forget_kl == grid["target"] == target
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


def test_a_seed_changes_only_the_unlearning_and_attack_seeds(tiny):
    settings = {seed: run["settings"] for seed, run in tiny["runs"].items()}
    for seed in (0, 1):
        assert settings[seed]["unlearn"]["seed"] == seed and settings[seed]["attacks"]["seed"] == seed
        assert settings[seed]["attacks"]["relearn"]["seed"] == seed
    assert set(settings[0]) == set(settings[1])
    for key in settings[0]:  # everything else is the recipe's, in every seed
        if key not in ("unlearn", "attacks"):
            assert settings[0][key] == settings[1][key], key

    def without_seeds(entry):
        entry = copy.deepcopy(entry)
        del entry["unlearn"]["seed"], entry["attacks"]["seed"], entry["attacks"]["relearn"]["seed"]
        return entry["unlearn"], entry["attacks"]

    assert without_seeds(settings[0]) == without_seeds(settings[1])
    # One original and retrained pair for all seeds, each seed's run in its own folder.
    out = tiny["tmp"] / "out"
    assert {p.name for p in out.iterdir()} >= {"models", "seed0", "seed1"}
    assert not (out / "seed0" / "models").exists() and not (out / "seed1" / "models").exists()
    # Seed 0 is the recipe as written (`hf-unlearn run markov_attacks`).
    plain = parse_markov_recipe(load_recipe(ROOT / "recipes" / "markov_attacks.yaml"))
    assert plain.shared_unlearn["seed"] == 0 and plain.attacks.seed == 0 and plain.attacks.relearn.seed == 0


def test_two_tiny_seeds_aggregate_to_their_mean(tiny):
    runs, summary = tiny["runs"], tiny["summary"]
    assert runs[0]["methods"]["GA"]["trajectory"][0]["step"] == 0
    # Different unlearning orders and relearning subsets give different numbers.
    first = {row["attack"] + str(row["step"]): row for row in runs[0]["methods"]["GA"]["attacks"]["recovery"]}
    second = {row["attack"] + str(row["step"]): row for row in runs[1]["methods"]["GA"]["attacks"]["recovery"]}
    key = "relearn/forget_subset4"
    assert first[key]["recovery"]["forget1_loss"] != second[key]["recovery"]["forget1_loss"]

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
    assert {seed: stop[seed]["steps"] for seed in stop} == {"0": 3, "1": 3}  # TINY: 3 steps, no stop level
    target = summary["target_forget_kl"]
    assert target == json.loads(COMMITTED.read_text())["target_forget_kl"]
    reached = sum(runs[seed]["methods"]["GA"]["trajectory"][-1]["forget_kl"] >= target for seed in (0, 1))
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
    assert (tiny["tmp"] / "recovery.png").stat().st_size > 1000
    assert "| GA" in tiny["tables"] and "@2" in tiny["tables"] and "@4" in tiny["tables"]
