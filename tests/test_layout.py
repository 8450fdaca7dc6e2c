"""The package's layers (docs/architecture.md): imports point one way only, and the CLI starts without torch."""

import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hf_unlearn"
CORE = ("trainers", "influence", "data", "evaluation", "hub", "models", "utils", "_lazy", "callbacks")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every hf_unlearn module `path` imports, at any depth of the file (function-level imports included)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("hf_unlearn")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("hf_unlearn"):
                found.add(module)
                found |= {f"{module}.{alias.name}" for alias in node.names}  # `from . import x` imports a module
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


MODULES = {_module_name(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def _existing(modules: set[str]) -> set[str]:
    return {m for m in modules if m in MODULES or any(k.startswith(m + ".") for k in MODULES)}


def test_the_walk_sees_the_package():
    assert {"hf_unlearn.trainers.imu_trainer", "hf_unlearn.runtime.cache", "hf_unlearn.tasks.tofu.pipeline"} <= set(
        MODULES
    )
    assert "hf_unlearn.influence" in MODULES["hf_unlearn.trainers.influence_weighting"]  # relative imports resolve


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) in CORE))
def test_core_imports_only_core(module):
    outside = sorted(m for m in _existing(MODULES[module]) if _layer(m) not in CORE)
    assert not outside, f"{module} (core) imports {outside}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) == "runtime"))
def test_runtime_imports_no_task_trainer_or_cli(module):
    bad = sorted(m for m in _existing(MODULES[module]) if _layer(m) in ("tasks", "cli", "trainers", "recipe"))
    assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("hf_unlearn.tasks.")))
def test_no_task_imports_another_task_or_the_cli(module):
    task = module.split(".")[2]
    bad = sorted(
        m
        for m in _existing(MODULES[module])
        if _layer(m) == "cli" or (m.startswith("hf_unlearn.tasks.") and m.split(".")[2] != task)
    )
    assert not bad, f"{module} imports {bad}"


def test_nothing_outside_the_cli_imports_it():
    bad = {m: sorted(i for i in MODULES[m] if _layer(i) == "cli") for m in MODULES if _layer(m) != "cli"}
    assert not {m: i for m, i in bad.items() if i}


def _imported(stderr: str, module: str) -> bool:
    """Whether `python -X importtime` output shows `module` imported (at any nesting depth)."""
    return re.search(rf"\|\s+{module}$", stderr, flags=re.MULTILINE) is not None


def _run(*argv: str) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    tick = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hf_unlearn.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return time.perf_counter() - tick, done


def test_help_and_recipe_errors_do_not_import_torch(tmp_path):
    seconds, done = _run("--help")
    assert done.returncode == 0 and "run" in done.stdout and "eval" in done.stdout
    assert _imported(done.stderr, "yaml") or _imported(done.stderr, "argparse")  # the check can see imports
    for module in ("torch", "transformers"):
        assert not _imported(done.stderr, module), f"`hf-unlearn --help` imported {module}"
    assert seconds < 5.0  # generous: the machine may be shared; the import check is the real test
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: markov\nepochs: 3\n")
    seconds, done = _run("run", str(bad))
    assert done.returncode == 2 and "Unknown key(s) in the Markov recipe: 'epochs'" in done.stderr
    assert (
        not _imported(done.stderr, "torch") and seconds < 5.0
    )  # generous: the machine may be shared; the import check is the real test
    seconds, done = _run("run", "no-such-recipe")
    assert (
        done.returncode == 2 and "embedded: markov" in done.stderr and seconds < 5.0
    )  # generous: the machine may be shared; the import check is the real test
