"""Stage fingerprints hold what changes a stage's result and nothing else: logging, saving, reporting, output paths,
the spelling of a model's path and the timings of a reference evaluation reuse the stage; a result-changing setting
recomputes it."""

import copy
import json
import os

import pytest
import yaml

from hf_unlearn.cli import main
from hf_unlearn.evaluation.tofu import ITEMS_FILE, SUMMARY_FILE, load_retain_reference
from hf_unlearn.runtime.cache import NOT_RESULT_SETTINGS, fingerprint_settings
from hf_unlearn.tasks.tofu.finetune import _finetune_fingerprint
from hf_unlearn.tasks.tofu.recipe import parse_tofu_recipe

from .test_cli import TINY
from .test_tofu_pipeline import tiny_recipe
from .tofu_helpers import save_tiny_model


def test_fingerprint_settings_drop_what_never_changes_a_result():
    settings = {"learning_rate": 1e-3, "logging_steps": 5, "report_to": "none", "output_dir": "x", "save_steps": 3}
    assert fingerprint_settings(settings) == {"learning_rate": 1e-3}
    assert {"logging_steps", "save_steps", "report_to", "output_dir"} <= NOT_RESULT_SETTINGS
    # The best checkpoint is picked among the saved ones: then the save settings shape the model.
    best = {**settings, "load_best_model_at_end": True}
    assert fingerprint_settings(best) == {"learning_rate": 1e-3, "save_steps": 3, "load_best_model_at_end": True}


def _run(tmp_path, recipe, capsys, *extra):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), *extra]) == 0
    return capsys.readouterr().out


def test_markov_models_are_reused_when_only_logging_saving_or_paths_change(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = {**copy.deepcopy(TINY), "methods": {"GA": {}}, "models_dir": "models", "output_dir": "out"}
    out = _run(tmp_path, recipe, capsys)
    assert out.count("Training the") == 2

    quiet = copy.deepcopy(recipe)
    quiet["train"].update(logging_steps=1, report_to="none", save_strategy="steps", save_steps=1)
    quiet.update(models_dir="./models", output_dir="elsewhere")  # the same folder spelled otherwise; other outputs
    out = _run(tmp_path, quiet, capsys)
    assert out.count("Reusing the cached") == 2 and "Training the" not in out

    (tmp_path / "link").symlink_to(tmp_path / "models")
    out = _run(tmp_path, {**quiet, "models_dir": str(tmp_path / "link")}, capsys)
    assert out.count("Reusing the cached") == 2

    changed = copy.deepcopy(recipe)
    changed["train"]["learning_rate"] = 1e-3
    out = _run(tmp_path, changed, capsys)
    assert out.count("was made with other settings (train differ)") == 2


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("base"))


def test_tofu_finetune_fingerprint_ignores_logging_and_the_spelling_of_the_base_path(base_model, monkeypatch):
    from hf_unlearn.tasks.tofu.data import select_rows

    monkeypatch.chdir(base_model.parent)

    def fingerprint(base, **finetune):
        recipe = tiny_recipe(base, "out")
        recipe["finetune"].update(finetune)
        plan = parse_tofu_recipe(recipe)
        return _finetune_fingerprint(
            plan, "target", select_rows(plan.train_data["target"], plan.data_dir), plan.base.identity()
        )

    first = fingerprint(str(base_model))
    assert fingerprint(f"./{base_model.name}", logging_steps=1, report_to="none", save_steps=7) == first
    assert fingerprint(os.path.relpath(base_model), run_name="another name", disable_tqdm=False) == first
    assert fingerprint(str(base_model), learning_rate=5e-3)["finetune"] != first["finetune"]


def test_a_retain_reference_is_keyed_by_its_values_not_its_timings(tmp_path):
    folder = tmp_path / "retain_eval"
    folder.mkdir()
    summary = {
        "num_items": {"forget": 2},
        "settings": {"forget_split": "forget05"},
        "mia_min_k": 0.6,
        "timing_s": {"a": 1.0},
    }
    items = {"splits": {"forget": [{"truth_ratio": 0.5}, {"truth_ratio": 0.7}]}}
    (folder / SUMMARY_FILE).write_text(json.dumps(summary))
    (folder / ITEMS_FILE).write_text(json.dumps(items))
    first = load_retain_reference(folder, "forget05").sha256

    (folder / SUMMARY_FILE).write_text(json.dumps({**summary, "timing_s": {"a": 9.0}}, indent=2))
    assert load_retain_reference(folder, "forget05").sha256 == first

    items["splits"]["forget"][1]["truth_ratio"] = 0.8
    (folder / ITEMS_FILE).write_text(json.dumps(items))
    assert load_retain_reference(folder, "forget05").sha256 != first


def test_a_model_is_keyed_by_its_weights_and_config_not_by_the_folder_it_came_from(tmp_path):
    """The same model loaded from two folders has one `model_sha256` (the key of its cached evaluations); a changed
    weight or config value gives another."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from hf_unlearn.runtime.hashing import model_sha256
    from hf_unlearn.utils import weights_sha256

    first = save_tiny_model(tmp_path / "first")
    shutil.copytree(first, tmp_path / "second")
    a, b = (AutoModelForCausalLM.from_pretrained(tmp_path / name) for name in ("first", "second"))
    assert a.config._name_or_path != b.config._name_or_path
    assert model_sha256(a) == model_sha256(b) and weights_sha256(a) == weights_sha256(b)
    b.config.rms_norm_eps *= 2  # the config is part of the model
    assert model_sha256(a) != model_sha256(b) and weights_sha256(a) == weights_sha256(b)
    with torch.no_grad():
        next(a.parameters()).view(-1)[0] += 1e-3
    assert weights_sha256(a) != weights_sha256(b)
