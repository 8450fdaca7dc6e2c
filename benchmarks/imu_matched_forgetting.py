"""Does influence reweighting help? Every method along its unlearning trajectory on the Markov task, compared at
matched forgetting.

    python benchmarks/imu_matched_forgetting.py [--regimes laptop spec] [--learning-rates 2e-4 5e-4 1e-3 2e-3]

Each method runs with every learning rate of a small grid (the same 50 steps and the same per-step evaluation for
every method). Along each trajectory the retain KL is read where the forget KL first reaches each level (linear
between steps); per method and level the best learning rate is kept. The two controls use IMU's head-only setting:
permuted weights (which samples: shuffled) and uniform weights on the same kept samples (how much: flattened).
GA-head and IMU-all pair each IMU variant with GA on the same parameters, so reweighting and head-only training are
separated.

Regimes: `laptop` is `recipes/markov.yaml` (original model trained 1 epoch, trajectory on 100 test sequences per
split); `spec` trains the original and retrained models for the full 5 epochs (`recipes/markov_spec.yaml`) but keeps
the trajectory on 200 test sequences per split so the grid fits a CPU (final numbers use every test sequence).
Writes `benchmarks/results/imu_matched_forgetting_markov.json` and `docs/results/imu_matched_forgetting_markov.png`.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

from hf_unlearn.evaluation import value_at_level
from hf_unlearn.recipe import load_recipe
from hf_unlearn.reporting import figure_axes, format_table, save_figure
from hf_unlearn.runtime.io import atomic_write_json
from hf_unlearn.runtime.versions import environment_versions
from hf_unlearn.tasks.markov import parse_markov_recipe, run_markov

ROOT = Path(__file__).resolve().parent.parent
WEIGHTING = {"psi": "sqrt", "batch_size": 512}
IMU_HEAD = {"method": "IMU", "trainable": "head", "influence_weighting": WEIGHTING}
NPO = {"method": "NPO", "beta": 1.0, "retain_loss": "none"}
METHODS = {
    "GA": {"method": "GA"},
    "GA-head": {"method": "GA", "trainable": "head"},
    "NPO": NPO,
    "SimNPO": {"method": "SimNPO", "beta": 1.0, "delta": 0.0, "forget_loss_coefficient": 1.0, "retain_loss": "none"},
    "IMU-head": IMU_HEAD,
    "IMU-all": {**IMU_HEAD, "trainable": "all"},
    "IMU-NPO": {**NPO, "influence_weighting": WEIGHTING},
    "IMU-permuted": {**IMU_HEAD, "influence_weighting": {**WEIGHTING, "permutation_seed": 0}},
    "IMU-uniform": {**IMU_HEAD, "influence_weighting": {**WEIGHTING, "uniform": True}},
}
REGIMES = {
    "laptop": ("markov", {}),
    "spec": ("markov_spec", {"evaluation": {"trajectory_examples": 200}}),
}
LEVELS = [0.25, 0.5, 1.0, 1.5, 2.0, 3.0]


def run_regime(name: str, learning_rates: list[float], methods: list[str], output_root: Path) -> dict:
    recipe_name, overrides = REGIMES[name]
    raw = copy.deepcopy(load_recipe(recipe_name))
    for section, values in overrides.items():
        raw[section] = {**(raw.get(section) or {}), **values}
    raw["methods"] = {
        f"{method}@{lr:g}": {**METHODS[method], "learning_rate": lr} for method in methods for lr in learning_rates
    }
    recipe = parse_markov_recipe(raw, output_dir=str(output_root / name))
    tick = time.perf_counter()
    results = run_markov(recipe)
    return {"results": results, "seconds": time.perf_counter() - tick}


def matched(results: dict, methods: list[str], learning_rates: list[float]) -> dict:
    """Per method and forget-KL level: the best retain KL over the learning rates, and which lr gave it."""
    table = {}
    for method in methods:
        rows = {}
        for level in LEVELS:
            candidates = []
            for lr in learning_rates:
                history = results["methods"][f"{method}@{lr:g}"]["history"]
                value = value_at_level(history, "forget_kl", "retain_kl", level)
                if value is not None:
                    candidates.append((value, lr))
            rows[str(level)] = (
                {"retain_kl": min(candidates)[0], "learning_rate": min(candidates)[1]} if candidates else None
            )
        runs = {f"{lr:g}": results["methods"][f"{method}@{lr:g}"] for lr in learning_rates}
        table[method] = {
            "at_forget_kl": rows,
            "end_points": {
                lr: {
                    key: run[key] for key in ("forget_kl", "retain_kl", "forget_loss", "retain_loss", "unlearn_seconds")
                }
                for lr, run in runs.items()
            },
            "trajectory_seconds": {lr: run["unlearn_seconds"] for lr, run in runs.items()},
        }
    return table


def plot(regimes: dict, path: Path) -> None:
    figure, axes = figure_axes(len(regimes), figsize=(6.5 * len(regimes), 5))
    axes = axes if len(regimes) > 1 else [axes]
    for axis, (name, regime) in zip(axes, regimes.items()):
        for method, entry in regime["matched"].items():
            points = [(float(level), row["retain_kl"]) for level, row in entry["at_forget_kl"].items() if row]
            if points:
                style = "--" if method.startswith(("IMU-permuted", "IMU-uniform")) else "-"
                axis.plot([p[1] for p in points], [p[0] for p in points], style, marker="o", label=method)
        axis.set_xlabel("best retain KL at that forgetting (lower is better)")
        axis.set_ylabel("forget KL reached (matched level)")
        axis.set_title(f"Markov, {name}: utility kept at matched forgetting")
        axis.legend(fontsize=8)
    save_figure(figure, path)


def verdict_table(regime: dict, methods: list[str]) -> str:
    rows = []
    for method in methods:
        cells = regime["matched"][method]["at_forget_kl"]
        rows.append([method] + [cells[str(level)]["retain_kl"] if cells[str(level)] else None for level in LEVELS])
    return format_table(rows, ["method"] + [f"rKL @ fKL {level:g}" for level in LEVELS])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    parser.add_argument("--learning-rates", nargs="+", type=float, default=[2e-4, 5e-4, 1e-3, 2e-3])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--output-root", type=Path, default=ROOT / "outputs" / "imu_matched_forgetting")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/imu_matched_forgetting_markov.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs/results/imu_matched_forgetting_markov.png")
    args = parser.parse_args()

    regimes = {}
    for name in args.regimes:
        run = run_regime(name, args.learning_rates, args.methods, args.output_root)
        results = run["results"]
        regimes[name] = {
            "seconds": run["seconds"],
            "original": results["original"],
            "retrained": results["retrained"],
            "settings": results["settings"],
            "matched": matched(results, args.methods, args.learning_rates),
            "histories": {label: method["history"] for label, method in results["methods"].items()},
        }
        print(f"\n{name}:\n{verdict_table(regimes[name], args.methods)}")
    payload = {
        "benchmark": "imu_matched_forgetting_markov",
        "levels": LEVELS,
        "learning_rates": args.learning_rates,
        "methods": {method: METHODS[method] for method in args.methods},
        "regimes": regimes,
        "environment": environment_versions(),
    }
    atomic_write_json(args.json, payload)
    plot(regimes, args.plot)
    print(f"Wrote {args.json} and {args.plot}.")


if __name__ == "__main__":
    main()
