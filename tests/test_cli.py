"""`hf-unlearn run` on a tiny Markov recipe end to end, caching, and clear errors for bad recipes."""

import json
from pathlib import Path

import pytest
import yaml

from hf_unlearn.cli import main

TINY = {
    "task": "markov",
    "seed": 0,
    "data": {"num_retain": 60, "num_forget1": 30, "num_forget2": 30, "length": 8},
    "model": {"n_layer": 1, "n_embd": 16, "n_head": 2},
    "train": {"num_train_epochs": 1, "per_device_train_batch_size": 16, "disable_tqdm": True},
    "unlearn": {
        "learning_rate": 1e-2,
        "per_device_train_batch_size": 4,
        "max_steps": 3,
        "save_strategy": "no",
        "disable_tqdm": True,
    },
    "evaluation": {"trajectory_examples": 5},
    "methods": {"GA": {}, "NPO": {"beta": 1.0, "retain_loss": "none"}, "GradDiff": {}},
}


def write(tmp_path, recipe, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_run_tiny_recipe_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", write(tmp_path, TINY), "--output-dir", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert (out / "tradeoff.png").stat().st_size > 1000
    assert set(results["methods"]) == {"GA", "NPO", "GradDiff"}
    for method in results["methods"].values():
        assert {"retain_loss", "forget_loss", "retain_kl", "forget_kl"} <= set(method)
        assert [entry["step"] for entry in method["history"]] == [0, 1, 2, 3]
        assert method["forget_loss"] > results["original"]["forget_loss"]
    assert results["retrained"]["retain_kl"] == pytest.approx(0.0, abs=1e-6)
    printed = capsys.readouterr().out
    assert "ℓ_r^KL" in printed and "GradDiff" in printed

    # A re-run reuses both cached models; changed training settings retrain.
    assert main(["run", write(tmp_path, TINY), "--output-dir", str(out)]) == 0
    assert capsys.readouterr().out.count("Reusing the cached") == 2
    changed = {**TINY, "train": {**TINY["train"], "learning_rate": 1e-3}, "methods": {"GA": {}}}
    assert main(["run", write(tmp_path, changed), "--output-dir", str(out)]) == 0
    assert capsys.readouterr().out.count("was made with other settings (train differ)") == 2


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epochs": 3}, "Unknown key(s) in the Markov recipe: 'epochs'"),
        ({"methods": {"GAA": {}}}, "Unknown method 'GAA'"),
        ({"methods": {"NPO": {"betta": 1.0}}}, "did you mean 'beta'"),
        ({"methods": {"NPO": {"beta": -1.0}}}, "beta must be > 0"),
        ({"methods": {}}, "non-empty `methods`"),
        ({"task": "imagenet"}, "supported tasks"),
        ({"data": {"num_retain": 1}}, "num_retain must be >= 2"),
        ({"unlearn": {**TINY["unlearn"], "learning_rate": "fast"}}, "methods.GA.learning_rate: 'fast' is not a number"),
        ({"train": {"logging_steps": 20, "num_train_epochs": "ten"}}, "num_train_epochs: 'ten' is not a number"),
        ({"evaluation": {"trajectory_examples": "all"}}, "evaluation.trajectory_examples: 'all' is not an integer"),
    ],
)
def test_bad_recipes_fail_with_a_clear_message(tmp_path, capsys, change, message):
    assert main(["run", write(tmp_path, {**TINY, **change}), "--output-dir", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.json").exists()


def test_missing_recipe_names_embedded_ones(capsys):
    assert main(["run", "no-such-recipe"]) == 2
    assert "embedded: markov" in capsys.readouterr().err


def test_yaml_exponents_without_a_dot_are_floats(tmp_path, capsys):
    """PyYAML reads `5e-4` as a string; the recipe takes it as the float the user meant, and --dry-run shows it."""
    recipe = Path(write(tmp_path, TINY))
    recipe.write_text(recipe.read_text().replace("learning_rate: 0.01", "learning_rate: 5e-4"))
    assert "5e-4" in recipe.read_text()
    assert main(["run", str(recipe), "--dry-run", "--set", "train.logging_steps=20"]) == 0
    printed = capsys.readouterr().out
    assert "lr 0.0005" in printed and "'logging_steps': 20" in printed
