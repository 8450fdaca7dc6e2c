"""Every method of `METHODS` runs in the Markov recipe by name: `recipes/markov.yaml` itself, shrunk with `--set`;
`--methods` picks some; method presets (`preset:`) resolve in a recipe."""

import json
import math
from pathlib import Path

import pytest
import yaml

from hf_unlearn.cli import main
from hf_unlearn.recipe import RecipeError, build_method_config
from hf_unlearn.trainers import METHOD_NAMES
from hf_unlearn.trainers.rmu_config import RMU_PRESETS

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "markov.yaml"
# The shipped recipe at toy scale: the same sequence length (20, so the idk sequence fits) and a 3-layer model (so
# RMU's layer 2 exists), a few sequences, 2 unlearning steps.
SHRINK = [
    "data.num_retain=40",
    "data.num_forget1=20",
    "data.num_forget2=20",
    "model.n_layer=3",
    "model.n_embd=16",
    "model.n_head=2",
    "train.per_device_train_batch_size=16",
    "train.disable_tqdm=true",
    "unlearn.max_steps=2",
    "unlearn.disable_tqdm=true",
    "unlearn.per_device_eval_batch_size=16",
    "evaluation.trajectory_examples=4",
]


def shrunk(tmp_path, *extra):
    args = ["run", str(RECIPE), "--output-dir", str(tmp_path / "out")]
    for item in SHRINK:
        args += ["--set", item]
    return args + list(extra)


def test_the_recipe_names_every_method():
    methods = yaml.safe_load(RECIPE.read_text())["methods"]
    named = {(spec or {}).get("method", label) for label, spec in methods.items()}
    assert named == set(METHOD_NAMES)


def test_markov_recipe_runs_every_method(tmp_path, capsys):
    assert main(shrunk(tmp_path)) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    labels = set(yaml.safe_load(RECIPE.read_text())["methods"])
    assert set(results["methods"]) == labels
    for label, row in results["methods"].items():
        for key in ("retain_loss", "forget_loss", "retain_kl", "forget_kl"):
            assert math.isfinite(row[key]), (label, key)
        assert row["steps"] == (1 if row["method"] == "IAU" else 2), label
        assert [entry["step"] for entry in row["history"]] == list(range(row["steps"] + 1)), label
    printed = capsys.readouterr().out
    assert "RMU" in printed and "IdkDPO" in printed and "PDU" in printed


def test_markov_recipe_runs_the_methods_named(tmp_path):
    assert main(shrunk(tmp_path, "--methods", "RMU,WGA")) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(results["methods"]) == ["RMU", "WGA"]
    assert results["methods"]["RMU"]["settings"] == {"preset": "tofu", "layer": 2}
    # Only the two ran: the original and retrained models, no gradient-restricted one.
    assert sorted(path.name for path in (tmp_path / "out" / "models").iterdir() if path.is_dir()) == [
        "original",
        "retrained",
    ]


def test_a_preset_resolves_under_the_entry_own_keys(tmp_path):
    shared = {"learning_rate": 1e-3, "max_steps": 7}
    config = build_method_config({"method": "RMU", "preset": "tofu", "layer": 2}, shared, tmp_path)
    assert (config.steering_coefficient, config.layer, config.learning_rate, config.max_steps) == (2.0, 2, 1e-3, 7)
    config = build_method_config({"method": "RMU", "preset": "wmdp_zephyr", "layer": 1}, shared, tmp_path)
    zephyr = RMU_PRESETS["wmdp_zephyr"]
    assert config.steering_coefficient == zephyr["steering_coefficient"] == 6.5
    assert config.retain_loss_weight == 1200.0 and config.learning_rate == 5e-5 and config.max_steps == 150
    assert config.trainable_patterns == zephyr["trainable_patterns"] and config.layer == 1


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"method": "RMU", "preset": "tofuu"}, "preset 'tofuu' is not one of RMU's presets ('tofu', 'wmdp_zephyr')"),
        ({"method": "GA", "preset": "tofu"}, "preset 'tofu' is not one of GA's presets (it has none)"),
    ],
)
def test_an_unknown_preset_is_refused(tmp_path, spec, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_method_config(spec, {}, tmp_path)


def test_a_bad_preset_in_a_recipe_fails_before_training(tmp_path, capsys):
    assert main(shrunk(tmp_path, "--set", "methods.RMU.preset=wmdp", "--methods", "RMU")) == 2
    assert "preset 'wmdp' is not one of RMU's presets" in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.json").exists()


def test_final_examples_limits_the_final_numbers_to_the_first_sequences(tmp_path):
    from transformers import GPT2LMHeadModel

    from hf_unlearn.recipe import load_recipe, parse_override, set_override
    from hf_unlearn.tasks.markov import MarkovEvaluator, make_markov_datasets, parse_markov_recipe

    args = shrunk(tmp_path, "--methods", "GA", "--set", "evaluation.final_examples=3")
    assert main(args) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    raw = load_recipe(RECIPE)
    for item in SHRINK:
        raw = set_override(raw, *parse_override(item))
    recipe = parse_markov_recipe(raw)
    data = make_markov_datasets(recipe.data, seed=recipe.seed)
    models = tmp_path / "out" / "models"
    retrained, original = (GPT2LMHeadModel.from_pretrained(models / name) for name in ("retrained", "original"))
    first = {name: data[f"{name}_test"].select(range(3)) for name in ("retain", "forget1", "forget2")}
    expected = MarkovEvaluator(first, retrained, pad_token_id=10)(original)
    assert results["original"] == pytest.approx(expected, rel=1e-6)
    everything = {name: data[f"{name}_test"] for name in ("retain", "forget1", "forget2")}
    assert MarkovEvaluator(everything, retrained, pad_token_id=10)(original)["retain_loss"] != pytest.approx(
        expected["retain_loss"], rel=1e-6
    )


# IAU and MU-Mis (one full-batch step; a double backward) are in the CPU recipe, not yet tuned for the GPU ones.
@pytest.mark.parametrize(
    "recipe_name, left_out",
    [
        ("forget05_smollm2", set()),
        ("forget05_llama32_1b", {"IAU", "MU-Mis"}),
        ("forget05_llama32_3b", {"IAU", "MU-Mis"}),
    ],
)
def test_tofu_recipes_name_every_method(recipe_name, left_out):
    methods = yaml.safe_load((RECIPE.parent / "tofu" / f"{recipe_name}.yaml").read_text())["methods"]
    assert {(spec or {}).get("method", label) for label, spec in methods.items()} >= set(METHOD_NAMES) - {
        "IAU",
        "MU-Mis",
    }


def test_tofu_recipe_entries_of_the_baselines_run_by_name(tmp_path):
    """The GPU recipe's entries of the nine baselines, as written (RMU's layer aside: the tiny model has 2 layers),
    in the tiny TOFU recipe of the tests: each unlearns and is evaluated."""
    from .tofu_helpers import save_tiny_model, tiny_recipe

    methods = yaml.safe_load((RECIPE.parent / "tofu" / "forget05_llama32_1b.yaml").read_text())["methods"]
    baselines = ("IdkNLL", "IdkDPO", "RMU", "UNDIAL", "WGA", "SatImp", "CE-U", "ME+GD", "PDU")
    chosen = {label: dict(methods[label]) for label in baselines}
    chosen["RMU"]["layer"] = 1
    out = tmp_path / "out"
    path = tmp_path / "tofu.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(save_tiny_model(tmp_path / "base"), out, methods=chosen)))
    assert main(["run", str(path)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == set(baselines)
    for label, row in results["methods"].items():
        assert row["unlearn_steps"] == 2, label
        assert math.isfinite(row["metrics"]["forget_Q_A_Prob"]), label


def test_stop_at_forget_kl_ends_unlearning_at_the_first_step_that_reaches_it(tmp_path):
    assert main(shrunk(tmp_path, "--methods", "GA", "--set", "evaluation.stop_at_forget_kl=1.0e-9")) == 0
    row = json.loads((tmp_path / "out" / "results.json").read_text())["methods"]["GA"]
    assert row["steps"] == 1 and [entry["step"] for entry in row["history"]] == [0, 1]
    assert main(shrunk(tmp_path, "--methods", "GA", "--set", "evaluation.stop_at_forget_kl=1.0e9")) == 0
    row = json.loads((tmp_path / "out" / "results.json").read_text())["methods"]["GA"]
    assert row["steps"] == 2 and row["history"][-1]["forget_kl"] < 1.0e9
