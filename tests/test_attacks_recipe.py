"""The attacks through the task contract: a Markov recipe's `attacks` section and `hf-unlearn attack`."""

import copy
import json

import pytest

from hf_unlearn.cli import main

from .test_cli import TINY, write

ATTACKS = {
    "attacks": ["relearn", "quant8", "quant4", "logit_lens"],
    "relearn": {"steps": [0, 2, 4], "learning_rate": 1e-3, "batch_size": 2},
    "relearn_rows": 6,
    "quant_backend": "rtn",  # plain torch: runs without bitsandbytes and quantizes GPT-2's Conv1D layers
}


def _recipe(**attacks):
    recipe = copy.deepcopy(TINY)
    recipe["methods"] = {"GA": {}, "NPO": {"beta": 1.0, "retain_loss": "none"}}
    recipe["attacks"] = {**ATTACKS, **attacks}
    return recipe


def test_attack_help_answers():
    with pytest.raises(SystemExit) as exit_:
        main(["attack", "--help"])
    assert exit_.value.code == 0


def test_markov_recipe_attacks_every_method_and_the_controls(tmp_path, capsys):
    out = tmp_path / "out"
    path = write(tmp_path, _recipe())
    assert main(["run", path, "--output-dir", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["attack_controls"]) == {"original", "retrained"}
    expected = {(f"relearn/{name}", step) for name in ("forget_subset", "related", "unrelated") for step in (0, 2, 4)}
    expected |= {("quant8", None), ("quant4", None), ("logit_lens", None)}
    for label in ("GA", "NPO"):
        rows = results["methods"][label]["attacks"]["recovery"]
        assert {(row["attack"], row["step"]) for row in rows} == expected
        for row in rows:
            if row["step"] == 0:  # nothing relearned yet: nothing recovered, on either model
                assert all(value in (0, None) for value in row["recovery"].values())
                assert all(value in (0, None) for value in row["retrained_recovery"].values())
            assert "retrained_recovery" in row and "retain_loss" in row["utility_change"]
        quant = results["methods"][label]["attacks"]["results"]["quant4"]["record"]["details"]
        assert quant["effective"] and quant["quantized_layers"] == quant["candidate_layers"]
        assert 0 <= quant["code_change"]["changed_quantized"] <= quant["code_change"]["changed"] <= 1
    assert (out / "recovery.png").is_file()
    assert "Recovery of forget1_loss" in capsys.readouterr().out

    # A re-run reuses every attack stage (the unlearning is deterministic, so the models hash the same).
    assert main(["run", path, "--output-dir", str(out)]) == 0
    stages = json.loads((out / "results.json").read_text())["stages"]
    attack_stages = {name: stage for name, stage in stages.items() if name.startswith("attacks/")}
    assert set(attack_stages) == {"attacks/original", "attacks/retrained", "attacks/methods/GA", "attacks/methods/NPO"}
    assert all(stage["reused"] for stage in attack_stages.values())


def test_markov_recipe_refuses_attacks_it_cannot_run(tmp_path, capsys):
    path = write(tmp_path, _recipe(attacks=["few_shot"]))
    assert main(["run", path, "--output-dir", str(tmp_path / "out"), "--dry-run"]) == 2
    assert "few_shot cannot run on the Markov task" in capsys.readouterr().err


def test_attack_command_on_saved_models(tmp_path, capsys):
    out = tmp_path / "out"
    recipe = copy.deepcopy(TINY)
    recipe["methods"] = {"GA": {}}
    path = write(tmp_path, recipe)
    assert main(["run", path, "--output-dir", str(out)]) == 0
    models = out / "models"
    # The retrained model as the "unlearned" one: its attacks recover exactly what the control's do.
    args = ["attack", "--model", str(models / "retrained"), "--original", str(models / "original")]
    args += ["--retrained", str(models / "retrained"), "--task", "markov", "--recipe", path]
    args += ["--attacks", "relearn,quant4", "--relearn-steps", "0,2", "--relearn-rows", "6", "--quant-backend", "rtn"]
    assert main([*args, "--output-dir", str(tmp_path / "attack")]) == 0
    payload = json.loads((tmp_path / "attack" / "attacks.json").read_text())
    rows = payload["unlearned"]["attacks"]["recovery"]
    assert {(row["attack"], row["step"]) for row in rows} >= {("quant4", None), ("relearn/forget_subset", 2)}
    for row in rows:
        assert row["recovery"] == row["retrained_recovery"]
    assert main(["attack", "--model", "m", "--original", "o", "--task", "tofu"]) == 2
    assert "--model: m is not a folder" in capsys.readouterr().err


def test_markov_gptq_calibrates_on_retain_sequences_only():
    from hf_unlearn.tasks.markov.attacks import markov_attack_inputs
    from hf_unlearn.tasks.markov.data import make_markov_datasets
    from hf_unlearn.tasks.markov.recipe import parse_markov_recipe

    recipe = parse_markov_recipe(_recipe(quant_backend="gptq", calibration_rows=7))
    data = make_markov_datasets(num_retain=60, num_forget1=30, num_forget2=30, length=8, seed=0)
    inputs = markov_attack_inputs(recipe, data, pad_token_id=10, retrained=None)
    retain = {tuple(row) for row in data["retain_train"]["input_ids"]}
    assert len(inputs["calibration"]) == 7 and all(tuple(row) in retain for row in inputs["calibration"])
    plain = markov_attack_inputs(parse_markov_recipe(_recipe()), data, pad_token_id=10, retrained=None)
    assert "calibration" not in plain  # only GPTQ reads calibration text
