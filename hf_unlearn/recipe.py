"""Recipes are YAML data: loading, validation with clear errors, and method configs built from them."""

from __future__ import annotations

import dataclasses
import difflib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .trainers import METHODS, UnlearnConfig

__all__ = ["build_method_config", "check_keys", "embedded_recipes", "load_recipe", "method_specs", "select_methods"]


def embedded_recipes() -> list[str]:
    """Names of the recipes shipped with the package (`hf-unlearn run NAME`); a subfolder is part of the name
    (`tofu/forget05_smollm2`)."""
    return sorted(_recipe_names(_recipes_root(), ""))


def _recipe_names(folder, prefix: str) -> list[str]:
    names = []
    for entry in folder.iterdir():  # Path or importlib Traversable: both have iterdir / is_dir / name
        if entry.is_dir() and not entry.name.startswith(("_", ".")):
            names += _recipe_names(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".yaml"):
            names.append(prefix + entry.name.removesuffix(".yaml"))
    return names


def _recipes_root():
    """`recipes/` of a source checkout (editable installs), else the copy shipped as `hf_unlearn.recipes`."""
    checkout = Path(__file__).resolve().parent.parent / "recipes"
    return checkout if checkout.is_dir() else resources.files("hf_unlearn.recipes")


def load_recipe(path_or_name: str | Path) -> dict[str, Any]:
    """Read a recipe from a YAML file, or an embedded recipe by name (e.g. `"markov"`)."""
    path = Path(path_or_name)
    if path.is_file():
        text = path.read_text()
    else:
        entry = _recipes_root()
        for part in path.parts[:-1] + (f"{path.name.removesuffix('.yaml')}.yaml",) if path.name else ():
            entry = entry / part
        if not path.name or ".." in path.parts or path.is_absolute() or not entry.is_file():
            raise FileNotFoundError(
                f"No recipe file {str(path_or_name)!r}, and no embedded recipe of that name "
                f"(embedded: {', '.join(embedded_recipes())})."
            )
        text = entry.read_text()
    try:
        recipe = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"Recipe {str(path_or_name)!r} is not valid YAML: {error}") from None
    if not isinstance(recipe, dict):
        raise ValueError(f"Recipe {str(path_or_name)!r} must be a YAML mapping, got {type(recipe).__name__}.")
    return recipe


def check_keys(mapping: Any, valid: set[str] | list[str], where: str) -> dict[str, Any]:
    """Raise a ValueError naming every unknown key (with a close match when there is one)."""
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise ValueError(f"{where} must be a mapping, got {type(mapping).__name__}: {mapping!r}.")
    unknown = [key for key in mapping if key not in valid]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), list(valid), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"Unknown key(s) in {where}: {', '.join(hints)}. Valid keys: {', '.join(sorted(valid))}.")
    return mapping


def method_specs(methods: Any) -> dict[str, dict[str, Any]]:
    """Validate the recipe's `methods` mapping: `label: {method: NAME, **config fields}` (method defaults to label)."""
    if not isinstance(methods, dict) or not methods:
        raise ValueError("The recipe needs a non-empty `methods` mapping, e.g. `methods: {GA: {}, NPO: {beta: 1.0}}`.")
    specs = {}
    for label, overrides in methods.items():
        overrides = dict(overrides or {})
        name = overrides.pop("method", label)
        if name not in METHODS:
            raise ValueError(f"Unknown method {name!r} (recipe entry {label!r}). Available: {', '.join(METHODS)}.")
        config_class = METHODS[name][0]
        check_keys(overrides, _field_names(config_class), f"methods.{label} ({config_class.__name__} fields)")
        specs[label] = {"method": name, **overrides}
    return specs


def select_methods(recipe: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    """A copy of `recipe` keeping only the `methods` entries named in `labels`, in the recipe's order (e.g. to report
    the finished methods of a long run, or to run one more): cached stages of the others are untouched."""
    methods = recipe.get("methods") or {}
    unknown = [label for label in labels if label not in methods]
    if unknown or not labels:
        named = ", ".join(map(repr, unknown)) + " not in the recipe" if unknown else "no method"
        raise ValueError(f"--methods: {named}; the recipe's methods are {', '.join(methods) or 'none'}.")
    return {**recipe, "methods": {label: spec for label, spec in methods.items() if label in labels}}


def build_method_config(spec: dict[str, Any], shared: dict[str, Any], output_dir: str | Path) -> UnlearnConfig:
    """A method's config from the recipe's shared `unlearn` settings, overridden by the method's own entry."""
    config_class = METHODS[spec["method"]][0]
    settings = {**shared, **{key: value for key, value in spec.items() if key != "method"}}
    check_keys(settings, _field_names(config_class), f"unlearn settings for {spec['method']}")
    return config_class(output_dir=str(output_dir), **settings)


def _field_names(config_class: type) -> set[str]:
    return {field.name for field in dataclasses.fields(config_class) if field.init}
