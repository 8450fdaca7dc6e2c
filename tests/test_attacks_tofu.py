"""The attacks on the TOFU task: a TOFU recipe's `attacks` section and `hf-unlearn attack --task tofu`."""

import json

import pytest
import yaml

from hf_unlearn.cli import main

from .tofu_helpers import save_tiny_model, tiny_recipe

ATTACKS = {
    "attacks": ["relearn", "quant8", "paraphrase", "prefix", "logit_lens"],
    "relearn": {"steps": [0, 2], "learning_rate": 1e-2, "batch_size": 2},
    "relearn_sets": ["forget_subset", "related"],
    "relearn_rows": 2,
    "quant_backend": "rtn",  # plain torch: runs without bitsandbytes
    "prefix_tokens": 1,
}


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("base"))


def write(path, recipe):
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def _recipe(base, out, **attacks):
    return tiny_recipe(base, out, methods={"GA": {}}, attacks={**ATTACKS, **attacks})


def test_tofu_recipe_attacks_every_method_and_the_controls(base_model, tmp_path, capsys):
    out = tmp_path / "out"
    path = write(tmp_path / "r.yaml", _recipe(base_model, out))
    assert main(["run", path]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["attack_controls"]) == {"original", "retrained"}
    attacked = results["methods"]["GA"]["attacks"]
    rows = attacked["recovery"]
    expected = {(f"relearn/{name}", step) for name in ("forget_subset", "related") for step in (0, 2)}
    expected |= {("quant8", None), ("paraphrase", None), ("prefix", None), ("logit_lens", None)}
    assert {(row["attack"], row["step"]) for row in rows} == expected
    for row in rows:
        assert "retrained_recovery" in row and set(row["utility_change"]) == {"model_utility", "retain_loss"}
        if row["attack"].startswith("relearn/") or row["attack"] == "quant8":
            assert set(row["recovery"]) == {"forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio", "forget_loss"}
        if row["step"] == 0:  # nothing relearned yet: nothing recovered, on either model
            assert all(value in (0, None) for value in row["recovery"].values())
            assert all(value in (0, None) for value in row["retrained_recovery"].values())
    # Recovery is computed from the scores: (attacked - unlearned) / (original - unlearned), forget Q_A prob.
    before, original = attacked["results"]["before"], results["attack_controls"]["original"]["before"]
    after = attacked["results"]["relearn/forget_subset"]["checkpoints"][-1]
    row = next(row for row in rows if row["attack"] == "relearn/forget_subset" and row["step"] == 2)
    key = "forget_Q_A_Prob"
    want = (after[key] - before[key]) / (original[key] - before[key])
    assert row["recovery"][key] == pytest.approx(want)
    assert attacked["results"]["relearn/forget_subset"]["record"]["settings"]["rows"] == 2
    assert "Recovery of forget_Q_A_Prob" in (out / "table.md").read_text()
    assert "Recovery of forget_Q_A_Prob" in capsys.readouterr().out

    # A re-run reuses every attack stage.
    assert main(["run", path]) == 0
    stages = json.loads((out / "results.json").read_text())["stages"]
    attack_stages = {name: stage for name, stage in stages.items() if name.startswith("attacks/")}
    assert set(attack_stages) == {"attacks/original", "attacks/retrained", "attacks/methods/GA"}
    assert all(stage["reused"] for stage in attack_stages.values())

    # `hf-unlearn attack --task tofu` on the saved models gives the stage's numbers.
    args = ["attack", "--model", str(out / "methods" / "GA" / "model"), "--original", str(out / "models" / "target")]
    args += ["--retrained", str(out / "models" / "retain"), "--task", "tofu", "--recipe", path]
    assert main([*args, "--output-dir", str(tmp_path / "attack")]) == 0
    payload = json.loads((tmp_path / "attack" / "attacks.json").read_text())
    command_rows = payload["unlearned"]["attacks"]["recovery"]
    assert [(row["attack"], row["step"]) for row in command_rows] == [(row["attack"], row["step"]) for row in rows]
    for mine, theirs in zip(command_rows, rows):
        for key, value in theirs["recovery"].items():
            if value is None:
                assert mine["recovery"][key] is None
            else:
                assert mine["recovery"][key] == pytest.approx(value, abs=1e-4)


def test_tofu_scores_only_forget_items_outside_the_relearning_subset(base_model, tmp_path):
    from hf_unlearn.recipe import load_recipe
    from hf_unlearn.tasks.tofu.attacks import tofu_attack_inputs
    from hf_unlearn.tasks.tofu.recipe import parse_tofu_recipe

    from .tofu_helpers import make_tokenizer

    raw = load_recipe(write(tmp_path / "r.yaml", _recipe(base_model, tmp_path / "out")))
    inputs = tofu_attack_inputs(parse_tofu_recipe(raw), make_tokenizer())
    scored = {row["question"] for row in inputs["data"]["scored"]["forget"]}
    relearned = set(inputs["data"]["relearned"])
    assert len(relearned) == 2 and len(scored) == 3 and not scored & relearned
    assert len(inputs["relearn_sets"]["forget_subset"]) == 2
    assert len(inputs["probes"]["paraphrase"]) == len(inputs["probes"]["forget"]) == 3


@pytest.mark.parametrize(
    ("attacks", "message"),
    [
        ({"attacks": ["few_shot"]}, "few_shot cannot run on the TOFU task"),
        ({"relearn_sets": ["unrelated"]}, "unrelated cannot run on the TOFU task"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_tofu_recipe_refuses_a_bad_attacks_section_in_one_line(base_model, tmp_path, capsys, attacks, message):
    path = write(tmp_path / "r.yaml", _recipe(base_model, tmp_path / "out", **attacks))
    assert main(["run", path, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
