"""How a reader walks a TOFU recipe through the package: the hf_unlearn modules entered, in order, while
`hf-unlearn run RECIPE` runs a tiny TOFU recipe (fine-tuning, evaluations, two methods, the table), and how often the
walk climbs back into a module it had already left.

    python -m benchmarks.module_walk [--verbose] [--json FILE]

Counted as `docs/architecture.md#how-the-module-walk-is-counted` says:

- `sys.setprofile` sees every Python call. A call counts only when the called function is defined in `hf_unlearn`;
  frames of other libraries (transformers, torch, TRL) are transparent: a trainer hook that transformers calls is
  entered from the hf_unlearn frame that called transformers.
- A reader reads each function once: a call descends only the first time that function (its code object) runs; a
  later call of a function already read is not a step of the walk (a loop over eight stages is read once).
- The walk is the sequence of modules the reader is in: a call enters the callee's module, its return goes back to
  the caller's. Consecutive steps in the same module collapse into one.
- `entries` of a module: how often it appears in that sequence; `climbs back`: the entries after the first (a return
  into, or a new call into, a module already left). The only module left out is `_lazy.py` (the package's lazy
  attribute lookup, a step into `__getattr__` and straight back).
- Four walks are counted from one run: `package` (every hf_unlearn module) and `recipe` (only the modules above the
  library core: `tasks/`, `runtime/`, `cli/`, `recipe.py`, `reporting.py`; the core's modules are then as
  transparent as transformers'), each with and without imports (`no imports`: the execution of a module's body when
  it is first imported, and of the class bodies in it, is not a step of the walk).

The walk needs the test fixtures (`tests/fixtures/tofu`, `tests/tofu_helpers.py`): run it from the repository root.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import yaml

import hf_unlearn

PACKAGE = str(Path(hf_unlearn.__file__).resolve().parent) + "/"
IGNORED = {"_lazy.py"}
# `--scope recipe`: only the layers a recipe walks through above the library core (the core's own modules, like
# transformers', are then transparent: the walk of a recipe, not of a training step).
RECIPE_SCOPE = ("tasks/", "runtime/", "cli/", "recipe.py", "reporting.py")


class ModuleWalk:
    """Records the reader's walk (see the module docstring) while active."""

    def __init__(self, scope: tuple[str, ...] | None = None, imports: bool = True) -> None:
        self.scope = scope
        self.imports = imports
        self.seen: set = set()
        self.stack: list = []  # the frames read (first calls of their function), innermost last
        self.walk: list[str] = []
        # The reader's open modules: a module is left when no frame of it is on the stack any more.
        self.open: Counter = Counter()
        self.opened: Counter = Counter()  # how often each module was opened (entered while not open)

    def _module(self, code) -> str | None:
        name = code.co_filename
        if not name.startswith(PACKAGE):
            return None
        module = name[len(PACKAGE) :]
        if module in IGNORED or (self.scope is not None and not module.startswith(self.scope)):
            return None
        return module

    def _step(self, module: str) -> None:
        if not self.walk or self.walk[-1] != module:
            self.walk.append(module)

    def __call__(self, frame, event, arg) -> None:
        if event == "call":
            code = frame.f_code
            if code in self.seen or (not self.imports and not code.co_flags & inspect.CO_NEWLOCALS):
                return
            module = self._module(code)
            if module is None:
                return
            self.seen.add(code)
            self.stack.append(frame)
            if not self.open[module]:
                self.opened[module] += 1
            self.open[module] += 1
            self._step(module)
        elif event == "return" and self.stack and frame is self.stack[-1]:
            self.stack.pop()
            self.open[self._module(frame.f_code)] -= 1
            if self.stack:
                self._step(self._module(self.stack[-1].f_code))

    def __enter__(self) -> ModuleWalk:
        sys.setprofile(self)
        return self

    def __exit__(self, *exc) -> None:
        sys.setprofile(None)

    def summary(self) -> dict:
        entries = Counter(self.walk)
        climbs = {module: count - 1 for module, count in entries.most_common() if count > 1}
        reopened = {module: count - 1 for module, count in self.opened.most_common() if count > 1}
        return {
            "modules": len(entries),
            "steps": len(self.walk),
            "climbs_back": sum(climbs.values()),
            "climbs_back_by_module": climbs,
            "reopened": sum(reopened.values()),
            "reopened_by_module": reopened,
            "entries": dict(entries.most_common()),
            "walk": self.walk,
        }


def tiny_tofu_recipe(base: Path, out: Path) -> dict:
    """The tests' tiny TOFU recipe (one fine-tuning epoch): fine-tune target and retain, unlearn with GA and IMU,
    evaluate, report."""
    from tests.tofu_helpers import tiny_recipe

    return tiny_recipe(
        base, out, finetune={"learning_rate": 1e-2, "num_train_epochs": 1, "per_device_train_batch_size": 4}
    )


class Walks:
    """Several walks recorded from one run (one profile function feeding each)."""

    def __init__(self, **walks: ModuleWalk) -> None:
        self.walks = walks

    def __call__(self, frame, event, arg) -> None:
        for walk in self.walks.values():
            walk(frame, event, arg)

    def __enter__(self) -> Walks:
        sys.setprofile(self)
        return self

    def __exit__(self, *exc) -> None:
        sys.setprofile(None)


def walk_tofu_recipe() -> dict:
    """The walks of one tiny TOFU run: every hf_unlearn module or the recipe scope, with or without imports."""
    from hf_unlearn.cli import main
    from tests.tofu_helpers import save_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        base = save_tiny_model(Path(tmp) / "base")
        path = Path(tmp) / "recipe.yaml"
        path.write_text(yaml.safe_dump(tiny_tofu_recipe(base, Path(tmp) / "out")))
        walks = Walks(
            **{
                f"{scope}{'' if imports else ', no imports'}": ModuleWalk(
                    RECIPE_SCOPE if scope == "recipe" else None, imports
                )
                for scope in ("package", "recipe")
                for imports in (True, False)
            }
        )
        with walks:
            code = main(["run", str(path)])
        if code != 0:
            raise SystemExit(f"The tiny TOFU run failed (exit code {code}).")
    return {name: walk.summary() for name, walk in walks.walks.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None, help="Also write the summary (and the whole walk) to this file.")
    parser.add_argument("--verbose", action="store_true", help="Print each walk's climbs back by module.")
    args = parser.parse_args(argv)
    summary = walk_tofu_recipe()
    print()
    for name, walk in summary.items():
        print(
            f"{name}: {walk['modules']} modules, {walk['steps']} steps, {walk['climbs_back']} climbs back, "
            f"{walk['reopened']} modules reopened after being left"
        )
        for module, count in walk["climbs_back_by_module"].items() if args.verbose else ():
            print(f"  {module}: {count} climbs back, reopened {walk['reopened_by_module'].get(module, 0)}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
