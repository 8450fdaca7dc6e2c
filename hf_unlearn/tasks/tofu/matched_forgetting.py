"""Does influence reweighting help on TOFU? Every method along its unlearning trajectory, compared at matched forgetting.

    torchrun --nproc_per_node 2 benchmarks/imu_matched_forgetting_tofu.py --data-dir path/to/tofu   # CPU, TOFU-mini
    accelerate launch benchmarks/imu_matched_forgetting_tofu.py --recipe tofu/forget05_llama32_1b      # a GPU
    python benchmarks/imu_matched_forgetting_tofu.py --dry-run                                         # the plan

It runs a TOFU recipe (default `tofu/forget05_smollm2`, whose fine-tuned target and retain models it shares with
`hf-unlearn run`: cached in the recipe's models folder) with the methods below at every learning rate of a small grid
(the grid of the parameters a method trains: the LM head alone takes larger steps), each for the recipe's unlearning
steps, with the same cheap evaluations for every method (`trajectory:` in the recipe: teacher-forced metrics on the
first 50 forget/holdout and 25 utility items, at step 0 and every `--eval-steps`). Along each trajectory the
teacher-forced model utility (the harmonic mean of model utility's six components that need no generation) is read
where the forget Q_A prob first falls to each level (linear between evaluations); per method and level the best
learning rate is kept. End points: the recipe's full suite on every unlearned model (model utility with ROUGE, forget
ROUGE, forget quality, ...).

GA-head and IMU-all pair each IMU variant with GA on the same parameters, so reweighting and head-only training are
separated; IMU-permuted (which samples: shuffled weights) and IMU-uniform (how much: equal weights on the same kept
samples) are the controls. Cost on the 2-core CPU, from the recipe's measured steps: ~16 s per full-model step of 8 rows
and ~13 min for each final suite, so every (method, lr) pair costs ~25-30 min: pick `--methods` and
`--learning-rates` to fit, or run on a GPU. Writes `benchmarks/results/imu_matched_forgetting_tofu_<name>.json` and
`docs/results/imu_matched_forgetting_tofu_<name>.png`, relative to the working directory (run it from the repository
root); `benchmarks/imu_matched_forgetting_tofu.py` is its command line.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

from hf_unlearn.evaluation import value_at_level
from hf_unlearn.evaluation.tofu import TEACHER_FORCED_UTILITY as UTILITY
from hf_unlearn.recipe import load_recipe
from hf_unlearn.reporting import figure_axes, format_table, save_figure
from hf_unlearn.runtime.distributed import is_main_process
from hf_unlearn.runtime.io import atomic_write_json
from hf_unlearn.runtime.versions import environment_versions
from hf_unlearn.tasks.tofu import run_tofu

WEIGHTING = {"psi": "sqrt", "batch_size": 8}
IMU_HEAD = {"method": "IMU", "trainable": "head", "influence_weighting": {**WEIGHTING, "update_epochs": 0}}
NPO = {"method": "NPO", "beta": 0.1, "retain_loss": "nll", "retain_loss_weight": 1.0}
METHODS = {
    "GA": {"method": "GA"},
    "GA-head": {"method": "GA", "trainable": "head"},
    "NPO": NPO,
    "SimNPO": {
        "method": "SimNPO",
        "beta": 4.5,
        "delta": 0.0,
        "forget_loss_coefficient": 0.125,
        "retain_loss": "nll",
        "retain_loss_weight": 1.0,
    },
    "IMU-head": IMU_HEAD,
    "IMU-all": {**IMU_HEAD, "trainable": "all"},
    "IMU-NPO": {**NPO, "influence_weighting": WEIGHTING},
    "IMU-permuted": {**IMU_HEAD, "influence_weighting": {**WEIGHTING, "permutation_seed": 0}},
    "IMU-uniform": {**IMU_HEAD, "influence_weighting": {**WEIGHTING, "uniform": True}},
}
# Learning rates per trained parameter set (the recipe unlearns at 2e-4; head-only IMU at 2e-4 barely moved there).
LEARNING_RATES = {"all": [5e-5, 1e-4, 2e-4], "head": [5e-4, 1e-3, 2e-3]}
LEVELS = [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]  # forget Q_A prob (the SmolLM2 target: 0.75 on all items, retain model 0.11)


def grid(methods: list[str], learning_rates: list[float] | None) -> dict[str, dict]:
    """`{"<method>@<lr>": spec}` for every method and learning rate of its grid."""
    return {
        f"{method}@{lr:g}": {**METHODS[method], "learning_rate": lr}
        for method in methods
        for lr in (learning_rates or LEARNING_RATES[METHODS[method].get("trainable", "all")])
    }


def matched(results: dict, runs: dict[str, dict], levels: list[float]) -> dict:
    """Per method and forget-prob level: the best teacher-forced utility over its learning rates, and which lr."""
    table: dict[str, dict] = {}
    for label, spec in runs.items():
        method = label.split("@")[0]
        run = results["methods"][label]
        entry = table.setdefault(method, {"at_forget_prob": {}, "end_points": {}})
        for level in levels:
            value = value_at_level(run["history"], "forget_Q_A_Prob", UTILITY, level, falling=True)
            best = entry["at_forget_prob"].get(str(level))
            if value is not None and (best is None or value > best[UTILITY]):
                entry["at_forget_prob"][str(level)] = {UTILITY: value, "learning_rate": spec["learning_rate"]}
            entry["at_forget_prob"].setdefault(str(level), None)
        final = run["metrics"]
        entry["end_points"][f"{spec['learning_rate']:g}"] = {
            **{key: final.get(key) for key in ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_quality")},
            **{key: final.get(key) for key in ("model_utility", UTILITY, "extraction_strength", "privleak")},
            "unlearn_steps": run["unlearn_steps"],
            "unlearn_seconds": run["unlearn_seconds"],
            "trajectory_eval_seconds": run.get("trajectory_eval_seconds"),
        }
    return table


def verdict_table(table: dict, levels: list[float]) -> str:
    rows = [
        [method] + [(cells[str(level)] or {}).get(UTILITY) for level in levels]
        for method, cells in ((m, e["at_forget_prob"]) for m, e in table.items())
    ]
    return format_table(rows, ["method"] + [f"TF-MU @ forget prob {level:g}" for level in levels])


def plot(results: dict, table: dict, runs: dict[str, dict], path: Path, title: str) -> None:
    figure, (best, raw) = figure_axes(2, figsize=(13, 5))
    for method, entry in table.items():
        points = [(float(level), row[UTILITY]) for level, row in entry["at_forget_prob"].items() if row]
        if points:
            style = "--" if method in ("IMU-permuted", "IMU-uniform") else "-"
            best.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=method)
    for label in runs:
        history = results["methods"][label]["history"]
        raw.plot([h["forget_Q_A_Prob"] for h in history], [h[UTILITY] for h in history], marker=".", label=label)
    for axis in (best, raw):
        axis.invert_xaxis()  # forgetting goes to the right
        axis.set_xlabel("forget Q_A prob (first items; lower = more forgotten)")
        axis.set_ylabel("teacher-forced model utility (higher is better)")
        axis.legend(fontsize=7)
    best.set_title(f"{title}: best utility at matched forgetting")
    raw.set_title("every trajectory (one point per evaluation)")
    save_figure(figure, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="tofu/forget05_smollm2", help="A TOFU recipe (embedded name or path).")
    parser.add_argument("--data-dir", default=None, help="Local TOFU folder (default: the recipe's, else the Hub).")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--learning-rates", nargs="+", type=float, default=None, help="One grid for every method.")
    parser.add_argument("--levels", nargs="+", type=float, default=LEVELS, help="Forget Q_A prob levels.")
    parser.add_argument("--eval-steps", type=int, default=10)
    parser.add_argument("--max-forget-items", type=int, default=50)
    parser.add_argument("--max-utility-items", type=int, default=25)
    parser.add_argument("--output-dir", type=Path, default=None, help="Default: outputs/imu_matched_forgetting_tofu.")
    parser.add_argument("--models-dir", type=Path, default=None, help="Default: the recipe's models folder.")
    parser.add_argument("--name", default=None, help="Results name (default: from the recipe, e.g. smollm2).")
    parser.add_argument("--json", type=Path, default=None, help="Default: benchmarks/results/<benchmark>_<name>.json")
    parser.add_argument("--plot", type=Path, default=None, help="Default: docs/results/<benchmark>_<name>.png")
    parser.add_argument("--dry-run", action="store_true", help="Validate and print the plan; load nothing.")
    args = parser.parse_args(argv)

    raw = copy.deepcopy(load_recipe(args.recipe))
    name = args.name or Path(args.recipe).stem.split("_", 1)[-1]
    runs = grid(args.methods, args.learning_rates)
    raw["methods"] = runs
    raw["trajectory"] = {
        "eval_steps": args.eval_steps,
        "max_forget_items": args.max_forget_items,
        "max_utility_items": args.max_utility_items,
    }
    models_dir = args.models_dir or Path(raw.get("output_dir") or "outputs/tofu") / "models"
    tick = time.perf_counter()
    results = run_tofu(
        raw,
        output_dir=args.output_dir or Path("outputs") / f"imu_matched_forgetting_tofu_{name}",
        models_dir=models_dir,
        data_dir=args.data_dir,
        dry_run=args.dry_run,
        recipe_arg=args.recipe,
    )
    if results is None or not is_main_process():
        return
    table = matched(results, runs, args.levels)
    payload = {
        "benchmark": f"imu_matched_forgetting_tofu_{name}",
        "recipe": args.recipe,
        "levels_forget_Q_A_Prob": args.levels,
        "utility": f"{UTILITY}: harmonic mean of the six teacher-forced model-utility components (trajectory items)",
        "trajectory": raw["trajectory"],
        "runs": runs,
        "matched": table,
        "target": results["models"]["target"]["metrics"],
        "retain": results["models"]["retain"]["metrics"],
        "histories": {label: results["methods"][label]["history"] for label in runs},
        "seconds": time.perf_counter() - tick,
        "stages": results.get("stages"),
        "environment": environment_versions(),
    }
    json_path = args.json or Path("benchmarks") / "results" / f"imu_matched_forgetting_tofu_{name}.json"
    plot_path = args.plot or Path("docs") / "results" / f"imu_matched_forgetting_tofu_{name}.png"
    atomic_write_json(json_path, payload)
    plot(results, table, runs, plot_path, f"TOFU {raw.get('forget_split', 'forget05')}, {name}")
    print(f"\n{verdict_table(table, args.levels)}\n\nWrote {json_path} and {plot_path}.")
