"""What a recipe section declares about its fields (`recipe.from_mapping` reads `min` and `keys` from the field
metadata), and what `parse_tofu_recipe` fills in once: the models, the folders, the split configs."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hf_unlearn.recipe import RecipeError, from_mapping
from hf_unlearn.runtime.lock import LOCK_FILE, hold_output_lock
from hf_unlearn.tasks.tofu.recipe import ModelSpec, parse_tofu_recipe
from tests.tofu_helpers import tiny_recipe


@dataclass
class Section:
    steps: int = field(default=1, metadata={"min": 1})
    items: int | None = field(default=None, metadata={"min": 0})
    data: dict[str, int] = field(default_factory=dict, metadata={"keys": ("forget", "retain")})


@dataclass
class Root:
    section: Section = field(default_factory=Section)


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({"steps": 0}, "section: steps must be >= 1, got 0."),
        ({"items": -1}, "section: items must be >= 0 or null, got -1."),
        ({"data": {"forgt": 1}}, "Unknown key(s) in section.data: 'forgt' (did you mean 'forget'?)"),
    ],
)
def test_a_value_outside_its_fields_bounds_is_refused_naming_it(mapping, message):
    with pytest.raises(RecipeError) as error:
        from_mapping(Section, mapping, "section")
    assert message in str(error.value)
    with pytest.raises(RecipeError) as error:  # a whole recipe names the key as written
        from_mapping(Root, {"section": mapping}, "the recipe", root=True)
    assert message in str(error.value)


def test_values_within_the_bounds_pass():
    section = from_mapping(Section, {"steps": 1, "items": None, "data": {"forget": 2}}, "section")
    assert (section.steps, section.items, section.data) == (1, None, {"forget": 2})
    assert from_mapping(Section, {"items": 0}, "section").items == 0


def test_the_tofu_recipe_is_filled_in_once(tmp_path):
    base = tmp_path / "base"
    recipe = tiny_recipe(base, tmp_path / "out")
    recipe["models"]["retain"] = {"name_or_path": str(tmp_path / "retain"), "adapter": str(tmp_path / "adapter")}
    plan = parse_tofu_recipe(recipe, models_dir=tmp_path / "models", dry_run=True)
    assert plan.output_path == plan.output_dir == tmp_path / "out"
    assert plan.models_path == plan.models_dir == tmp_path / "models"
    assert plan.configs == {  # the evaluation's splits of forget05
        "forget": "forget05_perturbed",
        "holdout": "holdout05",
        "retain": "retain_perturbed",
        "real_authors": "real_authors_perturbed",
        "world_facts": "world_facts_perturbed",
    }
    assert plan.base == ModelSpec(str(base))
    # A given adapter is merged into its model on loading.
    assert plan.given == {
        "retain": ModelSpec(str(tmp_path / "retain"), adapter=str(tmp_path / "adapter"), merge_adapter=True)
    }
    assert [s.config for s in plan.train_data["target"]] == ["retain_perturbed", "forget05"]
    assert set(plan.train_data) == {"target"}


@pytest.mark.parametrize(
    "models, message",
    [
        ({"target": {"train_data": ["forget05"], "name_or_path": "x"}}, "models.target: give either train_data"),
        ({"target": {"train_data": []}}, "models.target: train_data must list at least one selection"),
        ({"retain": {"dtype": "float32"}}, "models.retain: needs name_or_path"),
        ({"base": {"name_or_path": "x", "adapter": "y"}}, "models.base takes name_or_path only"),
    ],
)
def test_a_bad_model_source_is_refused_naming_it(tmp_path, models, message):
    recipe = tiny_recipe(tmp_path / "base", tmp_path / "out")
    recipe["models"].update(models)
    with pytest.raises(RecipeError, match=message.replace(".", r"\.")):
        parse_tofu_recipe(recipe, dry_run=True)


def test_a_lock_another_run_took_over_is_not_released(tmp_path):
    with hold_output_lock(tmp_path / "a", tmp_path / "b"):
        assert json.loads((tmp_path / "a" / LOCK_FILE).read_text())["pid"] > 0
        (tmp_path / "b" / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    assert not (tmp_path / "a" / LOCK_FILE).exists()
    assert json.loads(Path(tmp_path / "b" / LOCK_FILE).read_text()) == {"pid": 1, "host": "elsewhere"}
