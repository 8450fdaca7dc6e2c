"""Robustness attacks as a cached stage, for every task: `run_attacks` on one model in the folder
`output/attacks/<name>`, reused only when the task's fingerprint (the models' weights, the data, the attack and
evaluation settings, the library versions) matches; and the controls (the original and retrained models attacked
the same way)."""

from __future__ import annotations

import json
import time
from typing import Any

__all__ = ["attack_controls", "attack_stage"]


def attack_stage(log, recipe, name: str, model, models: dict[str, Any], inputs, fingerprint: dict[str, Any]):
    """`run_attacks` on `model` (`recipe.attacks`, the task's `inputs`) as the cached stage `attacks/<name>`; the
    weights of `model` and of the original and retrained models, the library versions and `fingerprint` (what else
    the task's scores depend on) key it. Returns the attacks' results, as read back from `attacks.json`."""
    from ..attacks.suite import attack_versions, run_task_attacks
    from ..utils import weights_sha256
    from .cache import cached_stage, commit_stage, open_scratch
    from .distributed import is_main_process, main_process_print
    from .io import atomic_write_json
    from .versions import environment_versions

    path = recipe.output_path / "attacks" / name.replace("/", "_")
    fingerprint = {
        "model": weights_sha256(model),
        "original": weights_sha256(models["original"]),
        "retrained": weights_sha256(models["retrained"]),
        **fingerprint,
        "attacks": recipe.attacks.settings(),
        "versions": {**environment_versions(), **attack_versions(recipe.attacks)},
    }
    with log.stage(f"attacks/{name}") as entry:
        stamp = cached_stage(path, fingerprint, f"attacks on {name}")
        if stamp is not None:
            entry.update(reused=True, compute_seconds=stamp.get("seconds"))
            return json.loads((path / "attacks.json").read_text())
        scratch = open_scratch(path, fingerprint)
        tick = time.perf_counter()
        results = run_task_attacks(
            model,
            recipe.attacks,
            inputs,
            original=models["original"],
            progress=lambda line: main_process_print(f"  attacks on {name}: {line}"),
        )
        results = json.loads(json.dumps(results))  # as it is read back from attacks.json
        if is_main_process():
            atomic_write_json(scratch / "attacks.json", results)
        commit_stage(scratch, path, fingerprint, {"seconds": time.perf_counter() - tick})
        entry.update(reused=False, compute_seconds=time.perf_counter() - tick)
    return results


def attack_controls(log, recipe, models: dict[str, Any], inputs, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The same attacks on the original and retrained models (`recipe.attacks.controls`), each a cached stage;
    without controls only the original's scores before any attack (the reference of every recovery)."""
    if not recipe.attacks.controls:
        return {"original": {"before": inputs["evaluator"](models["original"])}}
    return {
        name: attack_stage(log, recipe, name, models[name], models, inputs, fingerprint)
        for name in ("original", "retrained")
    }
