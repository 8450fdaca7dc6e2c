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
CORE = (
    "trainers",
    "influence",
    "data",
    "evaluation",
    "attacks",
    "hub",
    "models",
    "utils",
    "_lazy",
    "_compat",
    "callbacks",
)
# The layers from the bottom up (docs/architecture.md): a module imports only modules of its own rank or below. Within
# the core, `hub` sits below `trainers` (a trainer pushes through the hub, the hub never names a method) and
# `attacks` above them (a relearning attack trains). The package's own `__init__` is the public facade.
RANK = {
    "_lazy": 0, "_compat": 0, "utils": 0,
    "models": 1, "data": 1, "influence": 1,
    "evaluation": 2, "callbacks": 2,
    "hub": 3,
    "trainers": 4,
    "attacks": 5,
    "runtime": 6, "recipe": 6, "reporting": 6,
    "tasks": 7,
    "": 8,  # hf_unlearn/__init__.py
    "cli": 9,
}  # fmt: skip
MODULE_STRING = re.compile(r"^(hf_unlearn(\.\w+)*|\.+\w*(\.\w+)*)$")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str, package: str) -> str:
    """`name` (absolute, or relative with leading dots) as an absolute module name."""
    if not name.startswith("."):
        return name
    level = len(name) - len(name.lstrip("."))
    base = package.split(".")[: len(package.split(".")) - level + 1]
    rest = name.lstrip(".")
    return ".".join(base + ([rest] if rest else []))


def _imports(path: Path) -> set[str]:
    """Every hf_unlearn module `path` imports, at any depth of the file: import statements (function-level and
    TYPE_CHECKING ones included), `importlib.import_module` / `__import__` calls with a literal name, and the
    module strings of lazy-export tables (a dict whose values are all module names, as `lazy_exports` takes)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = _resolve("." * node.level + (node.module or ""), package)
            submodules = {f"{module}.{alias.name}" for alias in node.names} & NAMES  # `from . import x`, x a module
            found |= submodules or {module}
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = ast.unparse(node.func)
            if function in ("importlib.import_module", "import_module", "__import__") and isinstance(
                node.args[0].value, str
            ):
                anchor = node.args[1].value if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) else None
                found.add(_resolve(node.args[0].value, anchor or package))
        elif isinstance(node, ast.Dict) and node.values:
            # A value is a module name, or a tuple that starts with one (`{"run": ("hf_unlearn.cli.run", help)}`).
            values = [v.elts[0] if isinstance(v, ast.Tuple) and v.elts else v for v in node.values]
            values = [v.value if isinstance(v, ast.Constant) else None for v in values]
            if all(isinstance(v, str) and MODULE_STRING.match(v) for v in values):
                found |= {_resolve(v, package) for v in values}
        elif isinstance(node, ast.DictComp) and isinstance(node.value, ast.Constant):
            value = node.value.value
            if isinstance(value, str) and MODULE_STRING.match(value):
                found.add(_resolve(value, package))
    return {module for module in found if module.startswith("hf_unlearn")}


NAMES = {_module_name(path) for path in PACKAGE.rglob("*.py")}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


MODULES = {_module_name(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def _existing(modules: set[str]) -> set[str]:
    return {m for m in modules if m in MODULES}


def test_the_walk_sees_the_package():
    assert {"hf_unlearn.trainers.imu_trainer", "hf_unlearn.runtime.cache", "hf_unlearn.tasks.tofu.pipeline"} <= set(
        MODULES
    )
    assert "hf_unlearn.influence" in MODULES["hf_unlearn.trainers.influence_weighting"]  # relative imports resolve
    assert "hf_unlearn.trainers.methods" in MODULES["hf_unlearn.trainers"]  # lazy-export strings are read
    assert "hf_unlearn.cli.run" in MODULES["hf_unlearn.cli"]  # and so are importlib calls
    assert set(map(_layer, MODULES)) <= set(RANK), "a new layer needs a rank"


def test_the_walk_reads_lazy_strings_and_importlib(tmp_path):
    folder = tmp_path / "hf_unlearn" / "core"
    folder.mkdir(parents=True)
    (folder / "x.py").write_text(
        "import importlib\n"
        "_EXPORTS = {'A': '.y', 'B': 'hf_unlearn.tasks.z'}\n"
        "def f():\n    return importlib.import_module('..cli', 'hf_unlearn.core')\n"
    )
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "hf_unlearn"
    try:
        assert _imports(folder / "x.py") == {"hf_unlearn.core.y", "hf_unlearn.tasks.z", "hf_unlearn.cli"}
    finally:
        PACKAGE = saved


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    rank = RANK[_layer(module)]
    up = sorted(m for m in _existing(MODULES[module]) if RANK[_layer(m)] > rank)
    assert not up, f"{module} (layer {_layer(module) or 'hf_unlearn'}) imports a higher layer: {up}"


def test_no_import_cycles():
    """No module reaches itself through imports (lazy strings and function-level imports included); importing a
    submodule is not counted as importing its package's `__init__`."""
    graph = {m: sorted(_existing(i) - {m}) for m, i in MODULES.items()}
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


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


def test_every_package_is_listed_for_the_wheel():
    """pyproject.toml lists the packages explicitly (recipes ship as `hf_unlearn.recipes`): a new subpackage that is
    not listed would be missing from an installed wheel while an editable install still finds it."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {_module_name(path) for path in PACKAGE.rglob("__init__.py")}
    assert found <= listed, f"not in pyproject.toml's packages: {sorted(found - listed)}"


TESTS = PACKAGE.parent / "tests"
# Calls that load or execute a file as a module (or put a folder on the import path).
LOADERS = (
    "spec_from_file_location", "SourceFileLoader", "run_path", "run_module", "import_module", "__import__",
    "exec", "compile", "sys.path.insert", "sys.path.append", "sys.path.extend",
)  # fmt: skip


def _benchmark_loads(source: str) -> list[str]:
    """Where `source` (a test file) imports a module of `benchmarks/` or loads one by path: an import of
    `benchmarks[.x]`, or a loader call (`spec_from_file_location`, `runpy.run_path`, `exec`, a `sys.path` edit, ...)
    whose arguments name `benchmarks`, directly or through a name assigned in the file. Running a script as a
    subprocess is not a load."""
    tree = ast.parse(source)
    assigned: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        assigned.setdefault(name.id, []).append(ast.unparse(node.value))

    def names_benchmarks(expression: ast.AST, seen: frozenset = frozenset()) -> bool:
        if "benchmarks" in ast.unparse(expression):
            return True
        return any(
            names_benchmarks(ast.parse(text, mode="eval"), seen | {name.id})
            for name in ast.walk(expression)
            if isinstance(name, ast.Name) and name.id not in seen
            for text in assigned.get(name.id, [])
        )

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] == "benchmarks"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "benchmarks":
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call):
            function = ast.unparse(node.func)
            if function.split(".")[-1] in LOADERS or function in LOADERS:
                arguments = [*node.args, *(k.value for k in node.keywords)]
                if any(names_benchmarks(a) for a in arguments):
                    found.append(f"line {node.lineno}: {ast.unparse(node)[:100]}")
    return found


def test_the_benchmark_load_check_sees_every_way_in():
    """The check below flags each way a test could load a benchmark script, and not a subprocess run of one."""
    loads = {
        "import benchmarks.markov_attacks",
        "from benchmarks.tofu_mini import main",
        "import importlib.util\nspec = importlib.util.spec_from_file_location('x', ROOT / 'benchmarks' / 'x.py')",
        "def _script(name):\n    path = ROOT / 'benchmarks' / f'{name}.py'\n"
        "    return importlib.util.spec_from_file_location(name, path)",
        "import runpy\nrunpy.run_path(str(REPO / 'benchmarks/x.py'))",
        "import sys\nsys.path.insert(0, str(REPO / 'benchmarks'))\nimport x",
        "exec(open('benchmarks/x.py').read())",
    }
    for source in loads:
        assert _benchmark_loads(source), source
    runs = (
        "import subprocess, sys\nsubprocess.run([sys.executable, 'benchmarks/x.py', '--results-dir', 'out'])",
        "import importlib.util\nspec = importlib.util.spec_from_file_location('y', ROOT / 'examples' / 'y.py')",
    )
    for source in runs:
        assert not _benchmark_loads(source), source


def test_no_test_loads_a_benchmark_script():
    """Tests run a benchmark script through its command line (a subprocess) and read what it writes; logic a test
    needs to call lives in the package."""
    found = {
        str(path.relative_to(TESTS.parent)): loads
        for path in sorted(TESTS.rglob("*.py"))
        if (loads := _benchmark_loads(path.read_text()))
    }
    assert not found, f"tests that load a benchmark script: {found}"
