"""Every method on the Markov task, each tuned on the same small grid and compared at matched forgetting.

    python benchmarks/markov_method_grid.py                       # every method of GRID (about 30 min on 2 cores)
    python benchmarks/markov_method_grid.py --methods GA WGA      # some; merged into the JSON of earlier calls

Each method runs its entry of `recipes/markov.yaml` (the original and retrained models cached in
`outputs/markov/models`: run `hf-unlearn run markov` once first, or let the first call train them) at every learning
rate of LEARNING_RATES and, where the method has one, both values of its key coefficient (COEFFICIENTS): the same 50
steps of batch 4 and the same per-step evaluation for every method (here on the first 50 test sequences per chain, to
fit the CPU; final numbers on the full test sets). IAU takes one plain-SGD step, so its grid is over that step's size
η (IAU_STEP_SIZES) instead of an Adam learning rate.

Matched forgetting: along each trajectory the retain KL (and the losses) are read where the forget KL first reaches
each level of LEVELS (linear between steps, `value_at_level`); per method and level the grid point with the lowest
retain KL is kept. A method that never reaches a level in any grid point has no entry there. Writes
`benchmarks/results/markov_method_grid.json` and `docs/results/markov_methods_tradeoff.png`.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from hf_unlearn.evaluation import value_at_level
from hf_unlearn.recipe import load_recipe
from hf_unlearn.reporting import figure_axes, format_table, save_figure
from hf_unlearn.runtime.io import atomic_write_json
from hf_unlearn.runtime.versions import environment_versions
from hf_unlearn.tasks.markov import parse_markov_recipe, run_markov

ROOT = Path(__file__).resolve().parent.parent
LEARNING_RATES = [1e-4, 5e-4, 1e-3]
IAU_STEP_SIZES = [0.1, 0.3, 1.0]
# The key coefficient of each method that has one: (config field, its two grid values; the recipe's value first).
COEFFICIENTS = {
    "GradDiff": ("retain_loss_weight", [1.0, 5.0]),
    "NPO": ("beta", [1.0, 0.1]),
    "SimNPO": ("beta", [1.0, 2.5]),
    "IMU": ("trainable", ["head", "all"]),  # not a coefficient: the paper trains the head only; `all` as GA does
    "MU-Mis": ("sensitivity_output", ["logit", "logprob"]),
    "IdkDPO": ("beta", [0.1, 1.0]),
    "RMU": ("steering_coefficient", [2.0, 6.5]),
    "UNDIAL": ("beta", [10.0, 3.0]),
    "WGA": ("beta", [1.0, 5.0]),
    "SatImp": ("beta1", [5.0, 1.0]),
    "ME+GD": ("forget_loss_weight", [0.1, 1.0]),
    "PDU": ("retain_loss_bound", [2.0, 2.2]),
}
GRID_METHODS = [
    "GA", "GradDiff", "NPO", "SimNPO", "IMU", "IAU", "MU-Mis", "IdkNLL",
    "IdkDPO", "RMU", "UNDIAL", "WGA", "SatImp", "CE-U", "ME+GD", "PDU",
]  # fmt: skip
LEVELS = [0.25, 0.5, 1.0, 1.5, 2.0]
TARGET = 1.0  # the headline level of the table
TRAJECTORY_EXAMPLES = 50
KEYS = ("retain_kl", "retain_loss", "forget_loss", "forget1_kl", "forget2_kl")


def grid(method: str, recipe_methods: dict, coefficients: bool = True) -> dict[str, dict]:
    """`{"<method>@<lr>[,<field>=<value>]": spec}`: the recipe's entry of `method` at every grid point (with
    `coefficients=False`, only the recipe's value of the key coefficient)."""
    base = {"method": method, **{k: v for k, v in (recipe_methods.get(method) or {}).items() if k != "method"}}
    rates = IAU_STEP_SIZES if method == "IAU" else LEARNING_RATES
    field, values = COEFFICIENTS.get(method, (None, [None]))
    values = values if coefficients else values[:1]
    runs = {}
    for lr in rates:
        for value in values:
            label = f"{method}@{lr:g}" + (f",{field}={value}" if field else "")
            runs[label] = {**base, "learning_rate": lr, **({field: value} if field else {})}
    return runs


def matched_row(history: list[dict], level: float) -> dict | None:
    """The trajectory's metrics where forget KL first reaches `level` (linear between steps), with that step."""
    retain_kl = value_at_level(history, "forget_kl", "retain_kl", level)
    if retain_kl is None:
        return None
    row = {key: value_at_level(history, "forget_kl", key, level) for key in KEYS}
    row["step"] = value_at_level(history, "forget_kl", "step", level)
    return row


def summarize(method: str, runs: dict[str, dict], results: dict) -> dict:
    """Per level: the grid point with the lowest retain KL at that forget KL; and every grid point's end point."""
    entry = {"grid": {}, "at_forget_kl": {}}
    for label, spec in runs.items():
        run = results["methods"][label]
        entry["grid"][label] = {
            "settings": spec,
            "end": {key: run.get(key) for key in ("forget_kl", "retain_kl", "forget_loss", "retain_loss")},
            "unlearn_seconds": run["unlearn_seconds"],
            "steps": run["steps"],
            "at_forget_kl": {str(level): matched_row(run["history"], level) for level in LEVELS},
            "history": [{key: h[key] for key in ("step", "forget_kl", "retain_kl")} for h in run["history"]],
        }
    for level in LEVELS:
        points = [(point["at_forget_kl"][str(level)], label) for label, point in entry["grid"].items()]
        points = [(row, label) for row, label in points if row is not None]
        best = min(points, key=lambda p: p[0]["retain_kl"]) if points else None
        entry["at_forget_kl"][str(level)] = {**best[0], "run": best[1]} if best else None
    return entry


def closest_to_retrained(entry: dict) -> dict | None:
    """Over every grid point and step: where forget KL + retain KL to the retrained model is smallest (the retrained
    model has 0 on both). The matched-forgetting reading counts a higher forget KL as more forgetting; this one counts
    any distance from the retrained model, on either set, as error."""
    points = [
        (h["forget_kl"] + h["retain_kl"], label, h)
        for label, point in entry["grid"].items()
        for h in point.get("history", [])
    ]
    if not points:
        return None
    total, label, h = min(points, key=lambda p: p[0])
    return {"sum": total, "forget_kl": h["forget_kl"], "retain_kl": h["retain_kl"], "step": h["step"], "run": label}


def iau_from_step_sizes(path: Path, original: dict) -> dict:
    """IAU's row from `benchmarks/markov_iau_step_size.py`'s curve instead of a run per step size: IAU's one step
    θ* − η·d moves along one line, and that script scores it for every η of a grid from one pass (full test sets).
    The curve over η (η = 0: the original) is read like a trajectory; the step size is the grid point."""
    etas = json.loads(path.read_text())["eta"]
    curve = [{"step": 0.0, **original}] + [
        {"step": float(eta), **etas[eta]} for eta in sorted(etas, key=float) if float(eta) <= max(IAU_STEP_SIZES)
    ]
    entry = {"source": str(path.relative_to(ROOT)), "grid": {}, "at_forget_kl": {}}
    for level in LEVELS:
        row = matched_row(curve, level)
        entry["at_forget_kl"][str(level)] = None if row is None else {**row, "run": f"IAU@η={row.pop('step'):.3g}"}
    entry["grid"] = {
        f"IAU@{point['step']:g}": {"at_forget_kl": {}, "end": {k: point[k] for k in ("forget_kl", "retain_kl")}}
        for point in curve[1:]
    }
    return entry


def plot(table: dict, path: Path) -> None:
    figure, axes = figure_axes(1, figsize=(8, 6))
    for index, (method, entry) in enumerate(table.items()):
        points = [(float(level), row["retain_kl"]) for level, row in entry["at_forget_kl"].items() if row]
        if points:
            style = "-" if index < 10 else "--"
            axes.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=method)
    axes.set_xlabel("forget KL to the retrained model (matched level; more forgetting to the right)")
    axes.set_ylabel("best retain KL at that level over the grid (lower is better)")
    axes.set_yscale("log")
    axes.set_title("Markov: every method at matched forgetting (best grid point per level)")
    axes.legend(fontsize=7, ncol=2)
    save_figure(figure, path)


def verdict_table(table: dict) -> str:
    rows = [
        [method] + [(entry["at_forget_kl"][str(level)] or {}).get("retain_kl") for level in LEVELS]
        for method, entry in table.items()
    ]
    return format_table(rows, ["method"] + [f"rKL @ fKL {level:g}" for level in LEVELS])


def _full_test_original() -> dict:
    """The original model's numbers on the full test sets (the main job's results), the η = 0 point of IAU's curve."""
    return json.loads((ROOT / "benchmarks/results/markov_results.json").read_text())["original"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=GRID_METHODS, choices=GRID_METHODS)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "outputs" / "markov" / "models")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "outputs" / "markov_method_grid")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/markov_method_grid.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs/results/markov_methods_tradeoff.png")
    parser.add_argument("--load", default="", help="What else ran on the machine (recorded with the times).")
    parser.add_argument(
        "--no-coefficients", action="store_true", help="Learning rates only (the recipe's key coefficient)."
    )
    args = parser.parse_args()

    raw = copy.deepcopy(load_recipe(ROOT / "recipes" / "markov.yaml"))
    raw["evaluation"] = {
        **(raw.get("evaluation") or {}),
        "trajectory_examples": TRAJECTORY_EXAMPLES,
        "final_examples": TRAJECTORY_EXAMPLES,
        "stop_at_forget_kl": max(LEVELS),  # no step past the highest level is read
    }
    runs = {method: grid(method, raw["methods"], not args.no_coefficients) for method in args.methods}
    raw["methods"] = {label: spec for method_runs in runs.values() for label, spec in method_runs.items()}
    raw.pop("original_gradient_restriction", None)  # IAU+GR is not in the grid: its original is not needed
    recipe = parse_markov_recipe(raw, output_dir=str(args.output_dir / "-".join(args.methods)))
    recipe.models_dir = str(args.models_dir)
    tick = time.perf_counter()
    results = run_markov(recipe)
    seconds = time.perf_counter() - tick

    payload = json.loads(args.json.read_text()) if args.json.is_file() else {"methods": {}, "calls": []}
    for method, method_runs in runs.items():
        payload["methods"][method] = summarize(method, method_runs, results)
    iau_curve = ROOT / "benchmarks/results/markov_iau_step_size.json"
    if "IAU" not in args.methods and iau_curve.is_file():
        payload["methods"]["IAU"] = iau_from_step_sizes(iau_curve, _full_test_original())
    payload["methods"] = {m: payload["methods"][m] for m in GRID_METHODS if m in payload["methods"]}
    for entry in payload["methods"].values():
        entry["closest_to_retrained"] = closest_to_retrained(entry)
    payload["calls"].append(
        {"methods": args.methods, "coefficients": not args.no_coefficients, "seconds": seconds, "load": args.load}
    )
    payload.update(
        benchmark="markov_method_grid",
        levels=LEVELS,
        target=TARGET,
        learning_rates=LEARNING_RATES,
        iau_step_sizes=IAU_STEP_SIZES,
        coefficients={method: list(value) for method, value in COEFFICIENTS.items()},
        trajectory_examples=TRAJECTORY_EXAMPLES,
        original=results["original"],
        retrained=results["retrained"],
        settings=results["settings"],
        environment=environment_versions(),
    )
    atomic_write_json(args.json, payload)
    plot(payload["methods"], args.plot)
    print(f"\n{verdict_table(payload['methods'])}\nWrote {args.json} and {args.plot}.")


if __name__ == "__main__":
    main()
