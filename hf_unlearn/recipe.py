"""Recipes are typed YAML data: loading, type conversion with clear errors, and method configs built from them.

A recipe is a YAML mapping whose sections are dataclasses (the task's own, or a library's config class such as
`TrainingArguments`). `from_mapping(cls, mapping, where)` builds one: unknown keys get a "did you mean" hint, and
every value is converted to its field's annotated type or rejected with a message naming the key, the value and the
type, before anything is loaded or trained. PyYAML reads `5e-4` (no dot) as a string: it is the float the user meant.

This module imports neither torch nor transformers at import time, so a recipe error is reported at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import re
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

import yaml

__all__ = [
    "ACCELERATE_CONFIG_FOLDER",
    "LaunchArguments",
    "RecipeError",
    "accelerate_configs",
    "build_method_config",
    "check_keys",
    "convert",
    "embedded_recipes",
    "from_mapping",
    "load_recipe",
    "method_specs",
    "parse_override",
    "select_methods",
    "set_override",
]


class RecipeError(ValueError):
    """A recipe (or a CLI override of one) that cannot be used; the message names the key and the problem."""


# `recipes/accelerate/` holds `accelerate launch --config_file` files (one GPU, DDP, FSDP2, DeepSpeed ZeRO-2/3), shipped
# with the recipes but not recipes themselves.
ACCELERATE_CONFIG_FOLDER = "accelerate"


@dataclasses.dataclass
class LaunchArguments:
    """A recipe's `launch` section: the process count its per-process batch sizes are written for (a launch with
    another count is refused with the flags that keep the effective batch; `--num-processes N` sets it)."""

    num_processes: int = dataclasses.field(
        default=1, metadata={"help": "Processes the per-process batch sizes are written for.", "min": 1}
    )


def embedded_recipes() -> list[str]:
    """Names of the recipes shipped with the package (`hf-unlearn run NAME`); a subfolder is part of the name
    (`tofu/forget05_smollm2`). The accelerate config files (`accelerate_configs()`) are not recipes."""
    return sorted(_recipe_names(_recipes_root(), ""))


def accelerate_configs() -> dict[str, Path]:
    """The shipped `accelerate launch --config_file` files by name (`ddp`, `fsdp2`, ...), as paths on disk."""
    folder = _recipes_root() / ACCELERATE_CONFIG_FOLDER
    return {
        entry.name.removesuffix(".yaml"): Path(str(entry))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".yaml")
    }


def _recipe_names(folder, prefix: str) -> list[str]:
    names = []
    for entry in folder.iterdir():  # Path or importlib Traversable: both have iterdir / is_dir / name
        if not prefix and entry.name == ACCELERATE_CONFIG_FOLDER:
            continue
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
        if path.parts[:1] == (ACCELERATE_CONFIG_FOLDER,) and entry.is_file():
            raise FileNotFoundError(
                f"{str(path_or_name)!r} is an accelerate config file, not a recipe: pass it to accelerate, "
                f"`accelerate launch --config_file {entry} -m hf_unlearn.cli run RECIPE`."
            )
        if not path.name or ".." in path.parts or path.is_absolute() or not entry.is_file():
            raise FileNotFoundError(
                f"No recipe file {str(path_or_name)!r}, and no embedded recipe of that name "
                f"(embedded: {', '.join(embedded_recipes())})."
            )
        text = entry.read_text()
    try:
        recipe = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RecipeError(f"Recipe {str(path_or_name)!r} is not valid YAML: {error}") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"Recipe {str(path_or_name)!r} must be a YAML mapping, got {type(recipe).__name__}.")
    if "distributed_type" in recipe and "task" not in recipe:
        raise RecipeError(
            f"{str(path_or_name)!r} is an accelerate config file, not a recipe: pass it to accelerate, "
            f"`accelerate launch --config_file {path_or_name} -m hf_unlearn.cli run RECIPE`."
        )
    return recipe


def check_keys(mapping: Any, valid: set[str] | list[str] | dict, where: str) -> dict[str, Any]:
    """Raise a RecipeError naming every unknown key (with a close match when there is one); returns the mapping."""
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise RecipeError(f"{where} must be a mapping, got {type(mapping).__name__}: {mapping!r}.")
    unknown = [key for key in mapping if key not in valid]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise RecipeError(f"Unknown key(s) in {where}: {', '.join(hints)}. Valid keys: {', '.join(sorted(valid))}.")
    return mapping


# ------------------------------------------------------------------------------------------------ typed values


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", str(annotation))  # list[pkg.module.Selection] -> list[Selection]


def _yaml_boolean_hint(value: Any) -> str:
    return " (YAML reads an unquoted yes/no/on/off as a boolean: quote it)" if isinstance(value, bool) else ""


def convert(value: Any, annotation: Any, where: str) -> Any:
    """`value` as the type `annotation` names, or a RecipeError naming `where`, the value and the expected type.

    Accepted: an int for a float; a numeric string for an int or float (`"5e-4"`, which PyYAML reads as a string); an
    enum's value for the enum; a mapping for a dataclass (or a string for a dataclass with `from_string`); lists and
    dicts element-wise; the first member of a Union that fits. Types this function does not know pass unchanged.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is object:
        return value
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        members = [arg for arg in args if arg is not type(None)]
        # An exact type match first: `str | list[str]` keeps a string a string.
        errors = []
        for arg in sorted(members, key=lambda arg: not (isinstance(arg, type) and type(value) is arg)):
            try:
                return convert(value, arg, where)
            except RecipeError as error:
                errors.append(error)
        if len(members) == 1:  # `X | None`: X's own message says more
            raise errors[0]
        expected = " or ".join(_type_name(arg) for arg in args)
        raise RecipeError(f"{where}: {value!r} is not a {expected}{_yaml_boolean_hint(value)}.")
    if origin is Literal:
        if value in args:
            return value
        raise RecipeError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}{_yaml_boolean_hint(value)}.")
    if annotation is type(None):
        if value is None:
            return None
        raise RecipeError(f"{where}: expected null, got {value!r}.")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(f"{where}: {value!r} is not a boolean (true or false).")
    if annotation is int:
        number = _number(value, where, "an integer")
        if isinstance(number, float):
            if not number.is_integer():
                raise RecipeError(f"{where}: {value!r} is not an integer.")
            number = int(number)
        return number
    if annotation is float:
        return float(_number(value, where, "a number"))
    if annotation is str:
        if isinstance(value, str):
            return value
        raise RecipeError(f"{where}: {value!r} is not a string{_yaml_boolean_hint(value)}.")
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        try:
            return annotation(value)
        except ValueError:
            choices = ", ".join(repr(member.value) for member in annotation)
            raise RecipeError(f"{where}: {value!r} is not one of {choices}{_yaml_boolean_hint(value)}.") from None
    if origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected a list, got {value!r}.")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise RecipeError(f"{where}: expected {len(args)} values, got {value!r}.")
            return tuple(convert(item, arg, f"{where}[{i}]") for i, (item, arg) in enumerate(zip(value, args)))
        item_type = args[0] if args else Any
        items = [convert(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}.")
        value_type = args[1] if len(args) == 2 else Any
        return {key: convert(item, value_type, f"{where}.{key}") for key, item in value.items()}
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        if isinstance(value, str) and hasattr(annotation, "from_string"):
            return annotation.from_string(value)
        return from_mapping(annotation, value, where)
    return value


def _number(value: Any, where: str, what: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RecipeError(f"{where}: {value!r} is not {what}.")
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".en") else int(value)
        except ValueError:
            raise RecipeError(f"{where}: {value!r} is not {what}.") from None
    if isinstance(value, float) and math.isnan(value):
        raise RecipeError(f"{where}: NaN is not {what}.")
    return value


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass's init fields."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def from_mapping(cls: type, mapping: Any, where: str, *, root: bool = False, **fixed: Any) -> Any:
    """An instance of the dataclass `cls` from a recipe mapping: keys checked, values converted to the field types,
    `fixed` keyword arguments added unconverted (e.g. `output_dir`). A field's metadata may bound it: `min`, the
    smallest number it takes (null stays allowed where the type is optional); `keys`, the only keys of its mapping (a
    dict of named entries, or a section that may set some of its class's fields). A ValueError or TypeError from the
    class's own validation (`__post_init__`) is re-raised as a RecipeError that names `where`. With `root=True` (a
    whole recipe) the keys are named as they are (`unlearn.learning_rate`), not under `where`."""
    types_ = field_types(cls)
    prefix = "" if root else f"{where}."
    mapping = check_keys(mapping, types_, where)
    clash = sorted(set(mapping) & set(fixed))
    if clash:
        raise RecipeError(f"{where}: {', '.join(clash)} cannot be set here (the pipeline sets it).")
    fields = {field.name: field.metadata for field in dataclasses.fields(cls)}
    for key, value in mapping.items():
        if "keys" in fields[key]:
            check_keys(value, fields[key]["keys"], f"{prefix}{key}")
    values = {key: convert(value, types_[key], f"{prefix}{key}") for key, value in mapping.items()}
    for key, value in values.items():
        minimum = fields[key].get("min")
        if minimum is not None and value is not None and value < minimum:
            null = " or null" if type(None) in typing.get_args(types_[key]) else ""
            raise RecipeError(f"{where}: {key} must be >= {minimum}{null}, got {value}.")
    try:
        return cls(**values, **fixed)
    except (ValueError, TypeError) as error:
        raise RecipeError(f"{where}: {error}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """`section.key=value` (CLI `--set`) as `(["section", "key"], value)`; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {text!r}: expected KEY=VALUE, e.g. unlearn.learning_rate=1e-4.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise RecipeError(f"--set {text!r}: the value is not valid YAML ({error}).") from None
    return key.strip().split("."), value


def set_override(recipe: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """A copy of `recipe` with the nested key `path` set to `value` (intermediate mappings are created)."""
    recipe = dict(recipe)
    node = recipe
    for i, key in enumerate(path[:-1]):
        child = node.get(key)
        if child is None:
            child = {}
        elif not isinstance(child, dict):
            raise RecipeError(f"--set {'.'.join(path)}: {'.'.join(path[: i + 1])} is not a mapping.")
        node[key] = dict(child)
        node = node[key]
    node[path[-1]] = value
    return recipe


# ------------------------------------------------------------------------------------------------ methods


def method_specs(methods: Any) -> dict[str, dict[str, Any]]:
    """The recipe's `methods` mapping, `label: {method: NAME, **config fields}` (method defaults to the label), with
    names and keys checked; values are converted when the config is built (`build_method_config`)."""
    from .trainers import METHOD_NAMES

    if not isinstance(methods, dict) or not methods:
        raise RecipeError("The recipe needs a non-empty `methods` mapping, e.g. `methods: {GA: {}, NPO: {beta: 1.0}}`.")
    specs = {}
    for label, overrides in methods.items():
        if overrides is not None and not isinstance(overrides, dict):
            raise RecipeError(f"methods.{label} must be a mapping of config fields, got {overrides!r}.")
        overrides = dict(overrides or {})
        name = overrides.pop("method", label)
        if name not in METHOD_NAMES:
            close = difflib.get_close_matches(str(name), METHOD_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecipeError(
                f"Unknown method {name!r} in methods.{label}{hint}. Available: {', '.join(METHOD_NAMES)}."
            )
        specs[str(label)] = {"method": name, **overrides}
    return specs


def select_methods(recipe: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    """A copy of `recipe` keeping only the `methods` entries named in `labels`, in the recipe's order (e.g. to report
    the finished methods of a long run, or to run one more): cached stages of the others are untouched."""
    methods = recipe.get("methods") or {}
    unknown = [label for label in labels if label not in methods]
    if unknown or not labels:
        named = ", ".join(map(repr, unknown)) + " not in the recipe" if unknown else "no method"
        raise RecipeError(f"--methods: {named}; the recipe's methods are {', '.join(methods) or 'none'}.")
    return {**recipe, "methods": {label: spec for label, spec in methods.items() if label in labels}}


def build_method_config(spec: dict[str, Any], shared: dict[str, Any], output_dir: str | Path, where: str = ""):
    """A method's config from the recipe's shared `unlearn` settings, overridden by the method's named preset
    (`preset:`, `METHOD_PRESETS`), then by the method's own entry; every value converted to its field's type
    (`from_mapping`)."""
    from .trainers import METHODS
    from .trainers.methods import METHOD_PRESETS

    config_class = METHODS[spec["method"]][0]
    own = {key: value for key, value in spec.items() if key not in ("method", "preset")}
    where = where or f"unlearn settings of {spec['method']} ({config_class.__name__})"
    if spec.get("preset") is not None:  # a method's named settings (e.g. RMU's `preset: tofu`), under its own keys
        presets = METHOD_PRESETS.get(spec["method"], {})
        if spec["preset"] not in presets:
            raise RecipeError(
                f"{where}: preset {spec['preset']!r} is not one of {spec['method']}'s presets "
                f"({', '.join(map(repr, presets)) or 'it has none'})."
            )
        own = {**presets[spec["preset"]], **own}
    settings = {**shared, **own}
    return from_mapping(config_class, settings, where, output_dir=str(output_dir))
