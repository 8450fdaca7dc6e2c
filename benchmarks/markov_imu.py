"""IMU on the Markov task: ablations and baselines at matched forgetting, and IMU/GA wall time.

Runs recipes/markov_imu_ablation.yaml (reusing the models cached by `hf-unlearn run markov`, training them if absent)
and writes benchmarks/results/markov_imu_ablation.json with, per method, the final metrics, the unlearning time
without evaluation, and the retain KL at a forget-KL level every method reaches (the fair comparison of a trade-off).

    python benchmarks/markov_imu.py [--recipe recipes/markov_imu_ablation.yaml] [--out benchmarks/results/...json]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from hf_unlearn.recipe import load_recipe
from hf_unlearn.reporting import format_table
from hf_unlearn.runtime.io import atomic_write_json
from hf_unlearn.tasks.markov.evaluation import retain_kl_at_forget_kl
from hf_unlearn.tasks.markov.recipe import parse_markov_recipe
from hf_unlearn.tasks.markov.task import run_markov

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "markov_imu_ablation.yaml"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "markov_imu_ablation.json"))
    parser.add_argument("--methods", nargs="+", help="Run only these entries of the recipe's `methods` (default: all).")
    args = parser.parse_args()

    load_before = os.getloadavg()
    started = time.perf_counter()
    recipe = load_recipe(args.recipe)
    if args.methods:
        missing = sorted(set(args.methods) - set(recipe["methods"]))
        if missing:
            raise SystemExit(f"Not in the recipe: {missing}; available: {list(recipe['methods'])}")
        recipe["methods"] = {label: recipe["methods"][label] for label in args.methods}
    results = run_markov(parse_markov_recipe(recipe))
    methods = results["methods"]
    # The highest forget KL that every method's trajectory reaches: all of them can be compared there.
    level = min(max(entry["forget_kl"] for entry in method["history"]) for method in methods.values())
    # A second, early level: where the paper's Markov comparison starts to separate methods.
    levels = sorted({level, *[x for x in (0.25, 0.5) if x < level]})
    ga_seconds = methods["GA"]["unlearn_seconds"]
    summary = {}
    for label, method in methods.items():
        summary[label] = {
            "retain_kl_at_matched_forget_kl": retain_kl_at_forget_kl(method["history"], level),
            "retain_kl_at_forget_kl": {str(x): retain_kl_at_forget_kl(method["history"], x) for x in levels},
            "final": {key: method[key] for key in ("retain_loss", "retain_kl", "forget_loss", "forget_kl")},
            "unlearn_seconds": method["unlearn_seconds"],
            "time_vs_GA": method["unlearn_seconds"] / ga_seconds,
            "settings": method["settings"],
        }
    payload = {
        "benchmark": "markov_imu_ablation",
        "matched_forget_kl": level,
        "note": "retain KL (lower is better) where each trajectory first reaches the matched forget KL (the highest "
        "level every method reaches) and at fixed lower levels; trajectories are evaluated after every step "
        f"on the first {recipe.get('evaluation', {}).get('trajectory_examples')} test sequences per chain "
        "(None: all), final metrics on all.",
        "methods_run": list(methods),
        "methods_in_recipe_not_run": sorted(set(load_recipe(args.recipe)["methods"]) - set(methods)),
        "methods": summary,
        "original": results["original"],
        "retrained": results["retrained"],
        "settings": results["settings"],
        "wall_seconds": time.perf_counter() - started,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "torch": torch.__version__,
    }
    payload["forget_kl_levels"] = levels
    atomic_write_json(args.out, payload)
    rows = [
        [
            label,
            *[values["retain_kl_at_forget_kl"][str(x)] for x in levels],
            values["final"]["retain_kl"],
            values["final"]["forget_kl"],
            values["unlearn_seconds"],
            values["time_vs_GA"],
        ]
        for label, values in summary.items()
    ]
    print("\nRetain KL (lower is better) where each trajectory first reaches a forget KL level:")
    print(
        format_table(
            rows,
            [
                "method",
                *[f"ℓ_r^KL @ ℓ_f^KL {x:.3g}" for x in levels],
                "final ℓ_r^KL",
                "final ℓ_f^KL",
                "time (s)",
                "× GA",
            ],
        )
    )
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
