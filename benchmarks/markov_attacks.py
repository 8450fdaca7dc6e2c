"""Robustness attacks on the Markov benchmark at matched forgetting, over seeds: relearning, quantization and the
logit lens on every method's unlearned model, the original and retrained models attacked the same way as controls.

Runs recipes/markov_attacks.yaml (`hf-unlearn run markov_attacks` is its seed 0) once per seed, the seed replacing
the recipe's unlearning seed (`unlearn.seed`: the forget/retain batch order and a method's own draws) and attack
seeds (`attacks.seed`: the relearning subset and the related and unrelated rows drawn; `attacks.relearn.seed`: their
order). The data, the original and the retrained model stay those of the recipe's seed 42 in every seed (one cached
pair, `OUTPUT/models`). Seeds run one after the other, every method of a seed before the next seed, so that what has
finished is complete per seed; each seed's run is cached stage by stage in `OUTPUT/seed<N>` (a rerun reuses every
finished attack). Writes benchmarks/results/markov_attacks_seed<N>.json per seed (the run without the per-step
trajectories), then benchmarks/results/markov_attacks.json (mean and 95 % t-interval over the seeds of every
recovery) and docs/results/markov_recovery.png, and prints the tables quoted in docs/results/attacks.md.

    python benchmarks/markov_attacks.py --seeds 0 1 2 [--output-dir outputs/markov_attacks] [--load "..."]
    python benchmarks/markov_attacks.py --aggregate-only --seeds 0 1 2     # re-tabulate the committed seed files

`--results-dir` and `--plot` send the result files elsewhere (a test run writes into its own folder), and
`--table-steps` / `--plot-steps` choose the relearning checkpoints shown (a recipe with other `attacks.relearn.steps`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

from hf_unlearn.reporting import format_table
from hf_unlearn.runtime.io import atomic_write_json
from hf_unlearn.tasks.markov.statistics import mean_interval

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


SETS = ("forget_subset", "related", "unrelated")
STEPS = (0, 10, 25, 50, 100)
METRIC = "forget1_loss"  # the chain the original model learned (forget-2 was never learned: nothing to recover)
TARGET = 1.0  # the recipe's evaluation.stop_at_forget_kl
# A model is at matched forgetting when its unlearning ended by the stop rule: its forget KL on the trajectory's test
# rows reached TARGET (in every seed, for a method's row). A method that never gets there ends below it.
MIN_GAP = 0.1  # a method whose unlearning moved ℓ_f1 by less has recoveries that are ratios of noise: not plotted


def trimmed(payload: dict) -> dict:
    """A run's numbers with each method's per-step trajectory cut to step, forget KL and retain KL (the recovery
    needs none of it; where unlearning stopped does)."""
    out = {key: value for key, value in payload.items() if key != "methods"}
    out["methods"] = {}
    for label, entry in payload["methods"].items():
        out["methods"][label] = {key: value for key, value in entry.items() if key != "history"}
        history = entry.get("history") or []
        out["methods"][label]["trajectory"] = [
            {key: h.get(key) for key in ("step", "forget_kl", "retain_kl")} for h in history
        ]
    return out


def mean_ci(values: list[float | None]) -> dict | None:
    """`mean_interval` over the seeds that have a value, as mean and the half-width of its 95 % interval (None
    with fewer than two values)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    stat = mean_interval(values)
    half = None if len(values) < 2 else (stat["ci"][1] - stat["ci"][0]) / 2
    return {"mean": stat["mean"], "ci95": half, "n": len(values), "values": values}


def _key(row: dict) -> str:
    return row["attack"] + (f"@{row['step']}" if row["step"] is not None else "")


def _lens_best_layer(layers: dict, split: str = "forget1") -> int:
    entries = layers[split][:-1]
    return min(range(len(entries)), key=lambda i: entries[i]["loss"])


def _lens_best_loss(layers: dict, split: str = "forget1") -> float:
    return min(entry["loss"] for entry in layers[split][:-1])


def aggregate(runs: dict[int, dict]) -> dict:
    """Per method: where unlearning stopped, the scores before any attack, every attack's recovery of each forget
    metric (and the retrained control's) and the absolute change of ℓ_f1 after relearning, each as mean and 95 %
    interval over the seeds; the same for the original and retrained controls."""
    first = runs[min(runs)]
    labels = list(first["methods"])
    metrics = ("forget1_loss", "forget_loss", "forget_kl")
    summary: dict = {
        "benchmark": "markov_attacks",
        "seeds": sorted(runs),
        "target_forget_kl": TARGET,
        "metric": METRIC,
        "settings": {key: value for key, value in first["settings"].items()},
        "environment": first.get("environment"),
        "runs": {
            seed: {"wall_seconds": run.get("wall_seconds"), "load": run.get("load"), "complete": run.get("complete")}
            for seed, run in runs.items()
        },
        "original": first["original"],
        "retrained": first["retrained"],
        "methods": {},
        "controls": {},
    }
    del summary["settings"]["unlearn"]["seed"], summary["settings"]["attacks"]["seed"]
    del summary["settings"]["attacks"]["relearn"]["seed"]

    def drops(results: dict) -> dict:
        out = {}
        for name in SETS:
            checkpoints = {c["step"]: c for c in results.get(f"relearn/{name}", {}).get("checkpoints", [])}
            for step in sorted(checkpoints):
                if step and 0 in checkpoints:
                    out[f"relearn/{name}@{step}"] = checkpoints[step][METRIC] - checkpoints[0][METRIC]
        return out

    for label in labels:
        per_seed = {seed: run["methods"][label] for seed, run in runs.items() if label in run["methods"]}
        per_seed = {seed: entry for seed, entry in per_seed.items() if "attacks" in entry}
        if not per_seed:
            continue
        entry = {
            "method": first["methods"][label]["method"],
            "settings": first["methods"][label]["settings"],
            "seeds": sorted(per_seed),
            "stop": {},
            "before": {},
            "recovery": {},
            "retrained_recovery": {},
            "utility_change": {},
            "absolute_change": {},
            "quantization": {},
            "logit_lens_best_layer": {},
        }
        for seed, run in per_seed.items():
            trajectory = run.get("trajectory") or []
            entry["stop"][seed] = {
                "steps": run["steps"],
                "trajectory_forget_kl": trajectory[-1]["forget_kl"] if trajectory else None,
                "forget_kl": run["forget_kl"],
                "retain_kl": run["retain_kl"],
                "forget1_loss": run["forget1_loss"],
            }
        for key in ("steps", "forget_kl", "retain_kl", "forget1_loss", "trajectory_forget_kl"):
            entry["before"][key] = mean_ci([entry["stop"][seed][key] for seed in per_seed])
        # How far unlearning moved ℓ_f1 from the original's (on the attack rows): the denominator of every recovery.
        entry["forget1_gap"] = mean_ci(
            [
                run["attacks"]["results"]["before"][METRIC]
                - runs[seed]["attack_controls"]["original"]["before"][METRIC]
                for seed, run in per_seed.items()
            ]
        )
        reached = [(entry["stop"][seed]["trajectory_forget_kl"] or 0.0) >= TARGET for seed in per_seed]
        entry["reached_target"] = f"{sum(reached)}/{len(reached)}"
        entry["matched"] = all(reached)
        rows_by_seed = {seed: {_key(row): row for row in run["attacks"]["recovery"]} for seed, run in per_seed.items()}
        keys = list(next(iter(rows_by_seed.values())))
        for key in keys:
            for field, into in (("recovery", entry["recovery"]), ("retrained_recovery", entry["retrained_recovery"])):
                into[key] = {
                    metric: mean_ci([rows[key].get(field, {}).get(metric) for rows in rows_by_seed.values()])
                    for metric in metrics
                }
            entry["utility_change"][key] = mean_ci(
                [rows[key]["utility_change"].get("retain_loss") for rows in rows_by_seed.values()]
            )
        changes = {seed: drops(run["attacks"]["results"]) for seed, run in per_seed.items()}
        entry["absolute_change"] = {
            key: mean_ci([c.get(key) for c in changes.values()]) for key in next(iter(changes.values()))
        }
        for bits in ("quant8", "quant4"):
            details = [
                run["attacks"]["results"].get(bits, {}).get("record", {}).get("details", {})
                for run in per_seed.values()
            ]
            entry["quantization"][bits] = {
                "weights_changed_fp": mean_ci([d.get("code_change", {}).get("changed") for d in details]),
                "weights_changed_quantized": mean_ci(
                    [d.get("value_change", {}).get("changed_quantized") for d in details]
                ),
                "quantized_layers": [d.get("quantized_layers") for d in details],
                "effective": all(d.get("effective") for d in details),
            }
        lens = {
            seed: run["attacks"]["results"]["logit_lens"]["layers"]
            for seed, run in per_seed.items()
            if "logit_lens" in run["attacks"]["results"]
        }
        entry["logit_lens_best_layer"] = {seed: _lens_best_layer(layers) for seed, layers in lens.items()}
        # ℓ_f1 read at the best intermediate layer: below every readout of the retrained model (which never learned
        # forget-1) means forget-chain knowledge is readable there.
        entry["logit_lens_best_loss"] = mean_ci([_lens_best_loss(layers) for layers in lens.values()])
        summary["methods"][label] = entry
    for name in ("original", "retrained"):
        controls = {seed: run["attack_controls"][name] for seed, run in runs.items() if name in run["attack_controls"]}
        changes = {seed: drops(results) for seed, results in controls.items()}
        summary["controls"][name] = {
            "before": {key: mean_ci([c["before"].get(key) for c in controls.values()]) for key in metrics},
            "logit_lens_best_loss": mean_ci(
                [_lens_best_loss(c["logit_lens"]["layers"]) for c in controls.values() if "logit_lens" in c]
            ),
            "logit_lens_any_layer_loss": mean_ci(
                [
                    min(e["loss"] for e in c["logit_lens"]["layers"]["forget1"])
                    for c in controls.values()
                    if "logit_lens" in c
                ]
            ),
            "absolute_change": {
                key: mean_ci([c.get(key) for c in changes.values()]) for key in next(iter(changes.values()))
            },
        }
    return summary


SHOWN_SETTINGS = (
    "learning_rate", "beta", "beta1", "retain_loss_weight", "trainable", "steering_coefficient", "forget_loss_weight",
)  # fmt: skip


def _cell(stat: dict | None, digits: int = 2, sign: bool = False) -> str:
    if stat is None:
        return "–"
    fmt = f"{{:{'+' if sign else ''}.{digits}f}}"
    text = fmt.format(stat["mean"])
    return text if stat.get("ci95") is None else f"{text} ± {stat['ci95']:.{digits}f}"


def _label(label: str, entry: dict) -> str:
    return label if entry["matched"] else f"{label} †"


def tables(summary: dict, metric: str = METRIC, steps=(10, 50, 100)) -> str:
    """Markdown quoted in docs/results/attacks.md: where each method stopped, recovery after relearning (with the
    retrained control), the absolute change, quantization and the logit lens; mean ± 95 % interval over seeds."""
    methods = summary["methods"]
    n = len(summary["seeds"])
    controls = summary["controls"]
    lines = [
        f"Seeds: {', '.join(map(str, summary['seeds']))} ({n}); mean ± half-width of the 95 % t-interval over seeds. "
        f"† not at matched forgetting: the forget KL did not reach {TARGET:g} within the step cap in every seed.",
        "",
        f"Before any attack (attack test rows): original {metric} {_cell(controls['original']['before'][metric], 3)}, "
        f"retrained {_cell(controls['retrained']['before'][metric], 3)}.",
        "",
    ]
    header = ["method", "settings", "reached", "steps", "stop fKL (50 seq.)", "forget KL", "retain KL", "ℓ_f1"]
    rows = []
    for label, entry in methods.items():
        settings = ", ".join(f"{k} {v}" for k, v in entry["settings"].items() if k in SHOWN_SETTINGS)
        b = entry["before"]
        rows.append(
            [
                _label(label, entry),
                settings,
                entry["reached_target"],
                _cell(b["steps"], 1),
                _cell(b["trajectory_forget_kl"]),
                _cell(b["forget_kl"]),
                _cell(b["retain_kl"]),
                _cell(b["forget1_loss"]),
            ]
        )
    lines += ["Where unlearning stopped (full test sets unless marked):", "", format_table(rows, header), ""]

    any_entry = next(iter(methods.values()))
    last = max(steps)
    for name in SETS:
        header = ["method"] + [f"@{step}" for step in steps] + [f"Δℓ_f1 @{last}", f"Δ retain loss @{last}"]
        rows = []
        for label, entry in methods.items():
            rows.append(
                [_label(label, entry)]
                + [_cell(entry["recovery"][f"relearn/{name}@{step}"][metric]) for step in steps]
                + [
                    _cell(entry["absolute_change"][f"relearn/{name}@{last}"], 3, True),
                    _cell(entry["utility_change"][f"relearn/{name}@{last}"], 3, True),
                ]
            )
        rows.append(
            ["retrained (control)"]
            + [_cell(any_entry["retrained_recovery"][f"relearn/{name}@{step}"][metric]) for step in steps]
            + [_cell(controls["retrained"]["absolute_change"][f"relearn/{name}@{last}"], 3, True), ""]
        )
        rows.append(
            ["original (control)"]
            + [""] * len(steps)
            + [_cell(controls["original"]["absolute_change"][f"relearn/{name}@{last}"], 3, True), ""]
        )
        lines += [
            f"Relearning on {name}: recovery of {metric} after {'/'.join(map(str, steps))} steps:",
            "",
            format_table(rows, header),
            "",
        ]

    header = [
        "method",
        "quant8",
        "quant4",
        "logit lens",
        "lens ℓ_f1",
        "lens layer",
        "Δ retain loss (4-bit)",
        "changed (fp)",
        "changed (8-bit)",
        "changed (4-bit)",
    ]
    rows = []
    for label, entry in methods.items():
        q8, q4 = entry["quantization"]["quant8"], entry["quantization"]["quant4"]
        layers = sorted(set(entry["logit_lens_best_layer"].values()))
        rows.append(
            [
                _label(label, entry),
                _cell(entry["recovery"]["quant8"][metric]),
                _cell(entry["recovery"]["quant4"][metric]),
                _cell(entry["recovery"].get("logit_lens", {}).get(metric)),
                _cell(entry["logit_lens_best_loss"], 3),
                "/".join(map(str, layers)),
                _cell(entry["utility_change"]["quant4"], 4, True),
                _cell(q4["weights_changed_fp"]),
                _cell(q8["weights_changed_quantized"]),
                _cell(q4["weights_changed_quantized"]),
            ]
        )
    rows.append(
        [
            "retrained (control)",
            _cell(any_entry["retrained_recovery"]["quant8"][metric]),
            _cell(any_entry["retrained_recovery"]["quant4"][metric]),
            _cell(any_entry["retrained_recovery"].get("logit_lens", {}).get(metric)),
            _cell(controls["retrained"]["logit_lens_any_layer_loss"], 3) + " (any layer)",
            "",
            "",
            "",
            "",
            "",
        ]
    )
    lines += [
        f"Recovery of {metric} after quantization and through the logit lens (best intermediate layer); share of "
        "weights that differ from the original at full precision and once quantized (bitsandbytes' own values). "
        "lens ℓ_f1: the forget-1 loss at the best intermediate layer (the retrained model's best over all its layers "
        "is the level a model that never learned forget-1 reads):",
        "",
        format_table(rows, header),
    ]
    return "\n".join(lines)


def plot(summary: dict, path: Path, metric: str = METRIC, steps=STEPS) -> None:
    """Recovery of `metric` against relearning steps, one panel per relearning set, one line per method (mean over
    seeds; the intervals, wide over few seeds, are in the tables); methods not at matched forgetting dotted; the retrained control dashed."""
    from hf_unlearn.reporting import figure_axes, save_figure

    figure, axes = figure_axes(len(SETS), figsize=(17, 5.4))
    skipped = [label for label, entry in summary["methods"].items() if entry["forget1_gap"]["mean"] < MIN_GAP]
    colors = [__import__("matplotlib").colormaps["tab20"](i) for i in range(20)]
    for axis, name in zip(axes, SETS):
        for index, (label, entry) in enumerate(summary["methods"].items()):
            stats = [entry["recovery"].get(f"relearn/{name}@{step}", {}).get(metric) for step in steps]
            points = [(step, s) for step, s in zip(steps, stats) if s is not None]
            if not points or label in skipped:
                continue
            xs = [p[0] for p in points]
            ys = [p[1]["mean"] for p in points]
            style = "-" if entry["matched"] else ":"
            axis.plot(
                xs,
                ys,
                style,
                marker="o",
                markersize=3,
                color=colors[index % 20],
                label=label + ("" if entry["matched"] else " (not matched)"),
            )
        control = next(iter(summary["methods"].values()))["retrained_recovery"]
        points = [(step, control.get(f"relearn/{name}@{step}", {}).get(metric)) for step in steps]
        points = [(step, s) for step, s in points if s is not None]
        if points:
            axis.plot(
                [p[0] for p in points],
                [p[1]["mean"] for p in points],
                "--",
                color="black",
                linewidth=2,
                label="retrained (control)",
            )
        axis.axhline(0, color="grey", linewidth=0.5)
        axis.set_title(f"relearning on {name}")
        axis.set_xlabel("relearning steps (AdamW lr 1e-5)")
    axes[0].set_ylabel(f"recovery of {metric} (mean over {len(summary['seeds'])} seeds)")
    handles, labels = axes[-1].get_legend_handles_labels()
    axes[-1].legend(handles, labels, fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    if skipped:
        axes[-1].text(
            1.02,
            0.0,
            f"not plotted (ℓ_f1 moved\n< {MIN_GAP:g} by unlearning):\n" + ", ".join(skipped),
            transform=axes[-1].transAxes,
            fontsize=7,
            va="bottom",
        )
    figure.suptitle(
        f"Markov: recovery at matched forgetting (forget KL {TARGET:g}); dotted: not matched in every seed; "
        f"means over {len(summary['seeds'])} seeds (95 % intervals: docs/results/attacks.md)"
    )
    save_figure(figure, path)


def seed_recipe(path: Path, seed: int, output_dir: Path):
    """The recipe with `seed` as its unlearning and attack seeds, writing into `output_dir/seed<seed>` and sharing one
    cached original and retrained model (`output_dir/models`)."""
    from hf_unlearn.recipe import load_recipe
    from hf_unlearn.tasks.markov import parse_markov_recipe

    raw = copy.deepcopy(load_recipe(path))
    raw["unlearn"] = {**(raw.get("unlearn") or {}), "seed": seed}
    attacks = raw["attacks"]
    raw["attacks"] = {**attacks, "seed": seed, "relearn": {**(attacks.get("relearn") or {}), "seed": seed}}
    recipe = parse_markov_recipe(raw, output_dir=str(output_dir / f"seed{seed}"))
    recipe.models_dir = str(output_dir / "models")
    return recipe


def seed_path(results: Path, seed: int) -> Path:
    return results / f"markov_attacks_seed{seed}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "markov_attacks.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output-dir", type=Path, default=ROOT / "outputs" / "markov_attacks")
    parser.add_argument("--aggregate-only", action="store_true", help="Only re-tabulate the seed files.")
    parser.add_argument("--load", default="", help="What else ran on the machine (recorded with the times).")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="Where the seed and summary JSON go.")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "results" / "markov_recovery.png")
    parser.add_argument("--table-steps", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--plot-steps", type=int, nargs="+", default=list(STEPS))
    args = parser.parse_args()
    results = args.results_dir
    results.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # bitsandbytes looks for a kernel on the Hub otherwise
    if not args.aggregate_only:
        from hf_unlearn.tasks.markov import run_markov

        for seed in args.seeds:
            tick = time.perf_counter()
            payload = run_markov(seed_recipe(args.recipe, seed, args.output_dir))
            record = trimmed(payload)
            record.update(seed=seed, wall_seconds=time.perf_counter() - tick, load=args.load)
            atomic_write_json(seed_path(results, seed), record)
            print(f"seed {seed} done in {record['wall_seconds']:.0f} s: {seed_path(results, seed)}", flush=True)
    for seed in args.seeds:  # a finished run's own results.json, where it is still here, refreshes its seed file
        source = args.output_dir / f"seed{seed}" / "results.json"
        payload = json.loads(source.read_text()) if source.is_file() else None
        if payload is not None and payload.get("complete"):
            earlier = json.loads(seed_path(results, seed).read_text()) if seed_path(results, seed).is_file() else {}
            record = trimmed(payload)
            record.update(
                seed=seed,
                wall_seconds=earlier.get("wall_seconds", payload.get("total_seconds")),
                load=earlier.get("load", args.load),
            )
            atomic_write_json(seed_path(results, seed), record)
    seeds = [seed for seed in args.seeds if seed_path(results, seed).is_file()]
    runs = {seed: json.loads(seed_path(results, seed).read_text()) for seed in seeds}
    summary = aggregate(runs)
    atomic_write_json(results / "markov_attacks.json", summary)
    plot(summary, args.plot, steps=tuple(args.plot_steps))
    print(tables(summary, steps=tuple(args.table_steps)))


if __name__ == "__main__":
    main()
