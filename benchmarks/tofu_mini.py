"""TOFU-mini: every method unlearns the committed LoRA target until it has forgotten as much as the retain model,
then the TOFU suite compares them there (model utility and forget ROUGE at matched forget probability).

    python benchmarks/tofu_mini.py --data-dir path/to/tofu                       # all methods of the recipe
    python benchmarks/tofu_mini.py --data-dir path/to/tofu --methods GA NPO      # a subset (the rest stay cached)
    python benchmarks/tofu_mini.py --data-dir path/to/tofu --dry-run             # the plan; nothing loaded

It runs `recipes/tofu/mini_smollm2.yaml` (TOFU forget01 on SmolLM2-135M-Instruct; target and retain models are the
LoRA adapters committed in benchmarks/results/tofu_mini/) through `hf-unlearn run`'s stages, so every unlearned model
and evaluation is cached in the recipe's output folder and a re-run only adds what is missing. Each method stops at
the first trajectory evaluation (teacher-forced, all 40 forget01 items) where its forget Q_A prob is at or below
the recipe's `trajectory.stop_at` (the retain model's forget Q_A prob; `--stop-at` to change it), or after the
recipe's maximum steps. Then:

- `matched`: the teacher-forced model utility where each trajectory first reaches each of `--levels` (linear between
  evaluations), as in `benchmarks/imu_matched_forgetting_tofu.py`;
- `end_points`: the full suite at the stop (model utility with ROUGE, forget ROUGE, forget quality, ...), and whether
  the stop level was reached.

Writes benchmarks/results/tofu_mini_<name>.json and docs/results/tofu_mini_<name>.png (relative to the working
directory: run it from the repository root), and prints both tables.

`--seeds N ...`: a seed sweep. Every method also unlearns with each of these seeds (the forget/retain batch order and
a method's own draws), as `LABEL_seedN` beside the recipe's own seed in the same output folder (the target and retain
evaluations and the recipe-seed models are reused), with `trajectory.evaluate_at_end: false`: only the trajectories,
no suite at the stop. Writes benchmarks/results/tofu_mini_<name>_seeds.json: the matched metric at each level per
seed, and its mean with a 95 % Student-t interval over the seeds that reach the level:

    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 benchmarks/tofu_mini.py --data-dir path/to/tofu --stop-at retain \
        --methods GA NPO IMU --seeds 1 2 --matched-metric retain_Q_A_Prob

`--attacks [RECIPE]`: instead, the run's own unlearned models (the same cached stages: same recipe, `--stop-at`,
`--set` and `--methods`) are attacked, with the target and retain models as controls, by the `attacks:` section of
RECIPE (default `tofu/mini_attacks`; `--set attacks.KEY=VALUE` changes it): relearning, quantization and probes
(`hf-unlearn attack`'s suite), recovery per metric and attack. The attacks stage runs in one process, so the batch per
process is multiplied by the recipe's `launch.num_processes` (the same batch per optimizer step: the unlearning
stages are reused, not redone). Writes benchmarks/results/tofu_mini_attacks.json and docs/results/tofu_mini_recovery.png:

    HF_HUB_OFFLINE=1 python benchmarks/tofu_mini.py --data-dir path/to/tofu --stop-at retain \
        --methods GA NPO SimNPO IMU --attacks --set 'attacks.attacks=[relearn,quant8,quant4,paraphrase,prefix,logit_lens]'
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path
from typing import Any

from hf_unlearn.evaluation import value_at_level
from hf_unlearn.evaluation.tofu import MAIN_METRICS, UTILITY_COMPONENTS
from hf_unlearn.evaluation.tofu import TEACHER_FORCED_UTILITY as UTILITY
from hf_unlearn.recipe import load_recipe
from hf_unlearn.reporting import figure_axes, format_table, save_figure
from hf_unlearn.runtime.distributed import is_main_process
from hf_unlearn.runtime.io import atomic_write_json
from hf_unlearn.runtime.versions import environment_versions

PROB = "forget_Q_A_Prob"
END_METRICS = (
    PROB,
    "forget_Q_A_ROUGE",
    "model_utility",
    UTILITY,
    "forget_truth_ratio",
    "forget_quality",
    "extraction_strength",
    "privleak",
)
MODEL_METRICS = (*END_METRICS, "retain_Q_A_Prob", "retain_Q_A_ROUGE", "num_items")
# What a trajectory evaluation holds (teacher-forced: no ROUGE, no generation-based utility).
TRAJECTORY_METRICS = sorted(
    name for name in (*MAIN_METRICS, *UTILITY_COMPONENTS, UTILITY) if "ROUGE" not in name and name != "model_utility"
)


def stop_condition(level: float) -> str:
    return f"{PROB} <= {level:.6g}"


def matched(
    histories: dict[str, list[dict]], levels: list[float], metric: str = UTILITY
) -> dict[str, dict[str, float | None]]:
    """method -> {level: `metric` where its forget Q_A prob first reaches the level (linear between evaluations), or
    None if it never does}."""
    return {
        label: {f"{level:g}": value_at_level(history, PROB, metric, level, falling=True) for level in levels}
        for label, history in histories.items()
    }


def matched_description(metric: str) -> str:
    """What a result file's matched values are (its `matched_metric`)."""
    return (
        f"{metric} on the trajectory's items, where each method's forget Q_A prob first reaches each level (linear "
        "between evaluations)"
    )


def matched_inputs(results: dict, args, level: float) -> tuple[list[float], dict[str, list[dict]]]:
    """The levels to read at (`--levels`, else 4 even steps from the target's forget Q_A prob down to `level`) and
    every method's trajectory."""
    target_prob = results["models"]["target"]["metrics"][PROB]
    levels = args.levels or [round(level + (target_prob - level) * k / 4, 4) for k in (3, 2, 1, 0)]
    return levels, {label: run.get("history") or [] for label, run in results["methods"].items()}


def end_points(results: dict, level: float) -> dict[str, dict[str, Any]]:
    """method -> the suite's metrics at its stop, its steps and seconds, and whether it reached `level`."""
    table = {}
    for label, run in results["methods"].items():
        history = run.get("history") or []
        table[label] = {
            **{key: run["metrics"].get(key) for key in END_METRICS},
            "reached": bool(history) and history[-1][PROB] <= level,
            "steps": run.get("unlearn_steps"),
            "unlearn_seconds": run.get("unlearn_seconds"),
            "trajectory_eval_seconds": run.get("trajectory_eval_seconds"),
        }
    return table


def end_table(models: dict[str, dict], ends: dict[str, dict]) -> str:
    columns = [PROB, "forget_Q_A_ROUGE", "model_utility", UTILITY, "forget_quality", "extraction_strength"]
    rows = [[role] + [models[role].get(key) for key in columns] + ["", ""] for role in ("target", "retain")]
    rows += [
        [label] + [end.get(key) for key in columns] + [end["steps"], "yes" if end["reached"] else "no"]
        for label, end in ends.items()
    ]
    return format_table(rows, ["model", *columns, "steps", "reached"])


def matched_table(table: dict[str, dict], levels: list[float], metric: str = UTILITY) -> str:
    rows = [[label] + [cells[f"{level:g}"] for level in levels] for label, cells in table.items()]
    return format_table(rows, ["method"] + [f"{metric} @ forget prob {level:g}" for level in levels])


def plot(results: dict, ends: dict, level: float, path: Path, title: str, metric: str = UTILITY) -> None:
    figure, (trajectories, final) = figure_axes(2, figsize=(13, 5))
    for label, run in results["methods"].items():
        history = run.get("history") or []
        trajectories.plot([h[PROB] for h in history], [h[metric] for h in history], marker=".", label=label)
    trajectories.axvline(level, color="grey", linestyle=":", label=f"stop ({PROB} {level:.3g})")
    trajectories.invert_xaxis()  # forgetting goes to the right
    trajectories.set_xlabel(f"{PROB} (trajectory items; lower = more forgotten)")
    trajectories.set_ylabel(f"{metric} (trajectory items)")
    trajectories.set_title(f"{title}: unlearning trajectories")
    for role, marker in (("target", "s"), ("retain", "*")):
        metrics = results["models"][role]["metrics"]
        final.scatter(metrics["forget_Q_A_ROUGE"], metrics["model_utility"], marker=marker, s=120, color="k")
        final.annotate(role, (metrics["forget_Q_A_ROUGE"], metrics["model_utility"]))
    for label, end in ends.items():
        if end["forget_Q_A_ROUGE"] is not None and end["model_utility"] is not None:
            final.scatter(end["forget_Q_A_ROUGE"], end["model_utility"], marker="o" if end["reached"] else "x")
            final.annotate(label, (end["forget_Q_A_ROUGE"], end["model_utility"]))
    final.set_xlabel("forget ROUGE-L recall (lower = more forgotten)")
    final.set_ylabel("model utility (higher is better)")
    final.set_title("at the stop (o: reached the retain model's forget prob; x: not)")
    trajectories.legend(fontsize=7)
    save_figure(figure, path)


def rerender(args) -> None:
    """`--from-json`: the matched table (`--matched-metric`, `--levels`) and the plot again from a result file's
    histories and end points (of a `--seeds` file: the table over seeds, printed only); nothing is loaded or run."""
    import json

    payload = json.loads(args.from_json.read_text())
    level = float(payload["stop_at"].split("<=")[1])
    levels = args.levels or payload["levels_forget_Q_A_Prob"]
    if payload["benchmark"].endswith("_seeds"):
        table = seed_table(payload["histories"], levels, args.matched_metric, payload["settings"]["unlearn"]["seed"])
        print(format_seed_table(table, levels, args.matched_metric))
        return
    payload.update(
        levels_forget_Q_A_Prob=levels,
        matched=matched(payload["histories"], levels, args.matched_metric),
        matched_metric=matched_description(args.matched_metric),
    )
    results = {
        "models": {role: {"metrics": metrics} for role, metrics in payload["models"].items()},
        "methods": {label: {"history": history} for label, history in payload["histories"].items()},
    }
    name = payload["benchmark"].removeprefix("tofu_mini_")
    json_path = args.json or args.from_json
    plot_path = args.plot or Path("docs") / "results" / f"tofu_mini_{name}.png"
    atomic_write_json(json_path, payload)
    plot(results, payload["end_points"], level, plot_path, f"TOFU-mini, {name}", args.matched_metric)
    tables = f"{end_table(payload['models'], payload['end_points'])}\n\n"
    print(
        tables + matched_table(payload["matched"], levels, args.matched_metric) + f"\n\nWrote {json_path}, {plot_path}."
    )


def retain_level(raw: dict, output_dir, data_dir) -> float:
    """The retain model's forget Q_A prob on the items the trajectory scores (its first `max_forget_items`, all by
    default): from its evaluation stage, run (or reused) exactly as the pipeline runs it, so the recipe's run reuses
    it in turn."""
    from hf_unlearn.runtime.distributed import is_main_process, join_process_group
    from hf_unlearn.runtime.io import check_own_folder, claim_folder
    from hf_unlearn.tasks.tofu.eval_stage import evaluate_tofu_stage
    from hf_unlearn.tasks.tofu.finetune import load_model
    from hf_unlearn.tasks.tofu.recipe import parse_tofu_recipe

    device = join_process_group()
    plan = parse_tofu_recipe(copy.deepcopy(raw), output_dir=output_dir, data_dir=data_dir)
    if is_main_process():  # the run's own folder, as the run will claim it: never a folder of the user's files
        check_own_folder(plan.output_dir)
        claim_folder(plan.output_dir, "benchmarks/tofu_mini.py")
    model, tokenizer = load_model(plan.given["retain"], device)
    out = plan.output_dir / "eval" / "retain"
    result = evaluate_tofu_stage(
        model, tokenizer, plan.evaluation, data_dir=plan.data_dir, output_dir=out, model_name="retain"
    )
    count = (raw.get("trajectory") or {}).get("max_forget_items")
    probs = [item["prob"] for item in result["items"]["forget"][:count]]  # forget_Q_A_Prob is their mean
    return sum(probs) / len(probs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="tofu/mini_smollm2", help="A TOFU recipe (embedded name or path).")
    parser.add_argument("--data-dir", default=None, help="Local TOFU folder (default: the recipe's, else the Hub).")
    parser.add_argument("--methods", nargs="+", default=None, help="Labels of the recipe's methods (default: all).")
    parser.add_argument(
        "--stop-at",
        default=None,
        help="Forget Q_A prob to stop at, or 'retain': the retain model's (default: recipe's).",
    )
    parser.add_argument("--levels", nargs="+", type=float, default=None, help="Matched levels (default: 4 steps).")
    parser.add_argument(
        "--matched-metric",
        default=UTILITY,
        help="Trajectory metric read at matched forget prob (any teacher-forced metric, e.g. retain_Q_A_Prob).",
    )
    parser.add_argument("--output-dir", type=Path, default=None, help="Default: the recipe's output_dir.")
    parser.add_argument("--name", default=None, help="Results name (default: from the recipe, e.g. smollm2).")
    parser.add_argument("--json", type=Path, default=None, help="Default: benchmarks/results/tofu_mini_<name>.json")
    parser.add_argument("--plot", type=Path, default=None, help="Default: docs/results/tofu_mini_<name>.png")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE (YAML) override.")
    parser.add_argument(
        "--attacks",
        nargs="?",
        const="tofu/mini_attacks",
        default=None,
        help="Attack the run's unlearned models with this recipe's `attacks:` section (default tofu/mini_attacks), "
        "in one process; writes tofu_mini_attacks.json and tofu_mini_recovery.png instead of the comparison.",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=None,
        help="Seed sweep: each method also with these seeds (trajectories only); writes tofu_mini_<name>_seeds.json.",
    )
    parser.add_argument("--dry-run", action="store_true", help="Validate and print the plan; load nothing.")
    parser.add_argument(
        "--from-json", type=Path, default=None, help="Redo the tables and plot of this result file; run nothing."
    )
    args = parser.parse_args(argv)
    if args.matched_metric not in TRAJECTORY_METRICS:
        parser.error(
            f"--matched-metric: {args.matched_metric!r} is not a trajectory metric ({', '.join(TRAJECTORY_METRICS)})."
        )
    if args.from_json is not None:
        rerender(args)
        return

    import yaml

    from hf_unlearn.tasks.tofu import run_tofu

    raw = copy.deepcopy(load_recipe(args.recipe))
    if args.attacks is not None:
        attack_mode(raw, load_recipe(args.attacks), parser)
    for override in args.overrides:
        key, _, value = override.partition("=")
        *parents, leaf = key.split(".")
        section = raw
        for parent in parents:
            section = section.setdefault(parent, {})
        section[leaf] = yaml.safe_load(value)
    name = args.name or Path(args.recipe).stem.split("_", 1)[-1]
    if args.methods:
        unknown = sorted(set(args.methods) - set(raw["methods"]))
        if unknown:
            parser.error(f"--methods: {unknown} not in the recipe's methods ({', '.join(raw['methods'])}).")
        raw["methods"] = {label: raw["methods"][label] for label in args.methods}
    if args.seeds is not None:
        if args.attacks is not None:
            parser.error("--seeds and --attacks: one at a time.")
        seed_sweep(raw, args.seeds)
    output_dir = args.output_dir or raw.get("output_dir")
    tick, load_before = time.perf_counter(), os.getloadavg()
    trajectory = raw.setdefault("trajectory", {})
    if args.stop_at == "retain" and not args.dry_run:
        trajectory["stop_at"] = stop_condition(retain_level(raw, output_dir, args.data_dir))
    elif args.stop_at is not None and args.stop_at != "retain":
        trajectory["stop_at"] = stop_condition(float(args.stop_at))
    if not str(trajectory.get("stop_at", "")).startswith(f"{PROB} <="):
        parser.error(f"the recipe's trajectory.stop_at must read '{PROB} <= LEVEL' (or give --stop-at).")
    level = float(trajectory["stop_at"].split("<=")[1])
    if args.dry_run:
        run_tofu(raw, output_dir=output_dir, data_dir=args.data_dir, dry_run=True, recipe_arg=args.recipe)
        return
    # One method at a time (the earlier ones reused from their cached stages), the results written after each: an
    # interrupted comparison keeps every method it finished.
    # Each method's wall time in this invocation (its unlearning and suite, or their cache look-up) and the load
    # averages (1, 5, 15 min) at its end: what it ran under.
    labels, per_method = list(raw["methods"]), {}
    for count in range(1, len(labels) + 1):
        partial = {**raw, "methods": {label: raw["methods"][label] for label in labels[:count]}}
        started = time.perf_counter()
        results = run_tofu(partial, output_dir=output_dir, data_dir=args.data_dir, recipe_arg=args.recipe)
        per_method[labels[count - 1]] = {"wall_seconds": time.perf_counter() - started, "load_end": os.getloadavg()}
        if results is None or not is_main_process():
            continue
        load = {"start": load_before, "now": os.getloadavg()}
        if args.attacks is not None:
            write_attacks(results, args, labels, level, load, per_method, time.perf_counter() - tick)
            continue
        if args.seeds is not None:
            write_seeds(results, args, name, level, load, per_method, time.perf_counter() - tick)
            continue
        payload = report(results, args, raw, name, level, load)
        payload["seconds"] = time.perf_counter() - tick
        payload["per_method_run"] = per_method
        payload["methods_to_run"] = labels
        write(payload, results, args, raw, name, level)


def report(results: dict, args, raw: dict, name: str, level: float, load: dict) -> dict:
    """The benchmark's record of one run (what `--json` holds)."""
    levels, histories = matched_inputs(results, args, level)
    models = results_models(results)
    return {
        "benchmark": f"tofu_mini_{name}",
        "recipe": args.recipe,
        "overrides": args.overrides,
        "stop_at": stop_condition(level),
        "levels_forget_Q_A_Prob": levels,
        "matched_metric": matched_description(args.matched_metric),
        "models": {role: {key: metrics.get(key) for key in MODEL_METRICS} for role, metrics in models.items()},
        "memorisation": results.get("checks", {}).get("memorisation"),
        "settings": results.get("settings"),
        "end_points": end_points(results, level),
        "matched": matched(histories, levels, args.matched_metric),
        "histories": histories,
        "load_average": load,
        "stages": results.get("stages"),
        "environment": environment_versions(),
    }


def write(payload: dict, results: dict, args, raw: dict, name: str, level: float) -> None:
    json_path = args.json or Path("benchmarks") / "results" / f"tofu_mini_{name}.json"
    plot_path = args.plot or Path("docs") / "results" / f"tofu_mini_{name}.png"
    atomic_write_json(json_path, payload)
    title = f"TOFU-mini ({raw.get('forget_split')}), {name}"
    plot(results, payload["end_points"], level, plot_path, title, args.matched_metric)
    ends, levels = payload["end_points"], payload["levels_forget_Q_A_Prob"]
    metric = args.matched_metric
    tables = f"{end_table(results_models(results), ends)}\n\n{matched_table(payload['matched'], levels, metric)}"
    print(f"\n{tables}\n\nWrote {json_path} and {plot_path}.", flush=True)


# ------------------------------------------------------------------------------------------------ --seeds

SEED_SUFFIX = "_seed"


def seed_sweep(raw: dict, seeds: list[int]) -> None:
    """The recipe's methods, each followed by one copy per seed of `seeds` (`LABEL_seedN`, the seed in its settings),
    the copies ordered seed by seed (an interrupted sweep keeps whole seeds); trajectories only."""
    own = raw.get("seed", 42)
    base = raw["methods"]
    methods = dict(base)
    for seed in seeds:
        if seed == own:
            continue
        for label, spec in base.items():
            spec = dict(spec or {})
            methods[f"{label}{SEED_SUFFIX}{seed}"] = {**spec, "method": spec.get("method", label), "seed": seed}
    raw["methods"] = methods
    raw.setdefault("trajectory", {})["evaluate_at_end"] = False


def seed_table(histories: dict[str, list[dict]], levels: list[float], metric: str, own_seed: int) -> dict:
    """method -> {"seeds": {seed: {level: value or None}}, "summary": {level: mean and 95 % interval over the
    seeds that reach it}, "steps": {seed: steps run}}; a label `LABEL_seedN` is seed N of LABEL, a plain label the
    recipe's own seed."""
    from hf_unlearn.tasks.markov.statistics import mean_interval

    values = matched(histories, levels, metric)
    table: dict[str, dict] = {}
    for label, cells in values.items():
        method, suffix, seed = label.rpartition(SEED_SUFFIX)
        if not (suffix and seed.isdigit()):
            method, seed = label, own_seed
        entry = table.setdefault(method, {"seeds": {}, "steps": {}})
        seed = int(seed)
        entry["seeds"][seed] = cells
        entry["steps"][seed] = histories[label][-1]["step"] if histories[label] else None
    for entry in table.values():
        entry["summary"] = {}
        for level in levels:
            reached = [cells[f"{level:g}"] for cells in entry["seeds"].values() if cells[f"{level:g}"] is not None]
            entry["summary"][f"{level:g}"] = (
                {**mean_interval(reached), "of": len(entry["seeds"])}
                if reached
                else {"n": 0, "of": len(entry["seeds"])}
            )
    return table


def format_seed_table(table: dict, levels: list[float], metric: str) -> str:
    def cell(stat: dict) -> str:
        if not stat["n"]:
            return f"not reached (0/{stat['of']})"
        if stat["n"] == 1:
            return f"{stat['mean']:.3f} (1/{stat['of']})"
        half = (stat["ci"][1] - stat["ci"][0]) / 2
        return f"{stat['mean']:.3f} ± {half:.3f} ({stat['n']}/{stat['of']})"

    rows = [[method] + [cell(entry["summary"][f"{level:g}"]) for level in levels] for method, entry in table.items()]
    headers = ["method"] + [f"{metric} @ forget prob {level:g}" for level in levels]
    return format_table(rows, headers) + "\n(mean ± half-width of the 95 % t-interval over the seeds that reach it)"


def write_seeds(results: dict, args, name: str, level: float, load: dict, per_method: dict, seconds):
    levels, histories = matched_inputs(results, args, level)
    own_seed = results["settings"]["unlearn"]["seed"]  # the recipe's, as the run parsed it
    table = seed_table(histories, levels, args.matched_metric, own_seed)
    payload = {
        "benchmark": f"tofu_mini_{name}_seeds",
        "recipe": args.recipe,
        "overrides": args.overrides,
        "seeds": sorted({own_seed, *args.seeds}),
        "stop_at": stop_condition(level),
        "levels_forget_Q_A_Prob": levels,
        "matched_metric": matched_description(args.matched_metric),
        "models": {role: {key: m.get(key) for key in MODEL_METRICS} for role, m in results_models(results).items()},
        "methods": table,
        "histories": histories,
        "settings": results.get("settings"),
        "load_average": load,
        "per_method_run": per_method,
        "seconds": seconds,
        "stages": results.get("stages"),
        "environment": environment_versions(),
    }
    json_path = args.json or Path("benchmarks") / "results" / f"tofu_mini_{name}_seeds.json"
    atomic_write_json(json_path, payload)
    print(f"\n{format_seed_table(table, levels, args.matched_metric)}\n\nWrote {json_path}.", flush=True)


# ------------------------------------------------------------------------------------------------ --attacks

RELEARN = "relearn/forget_subset"
RECOVERY_PLOT_METRICS = ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_loss", "model_utility")


def attack_mode(raw: dict, attack_recipe: dict, parser) -> None:
    """The comparison recipe with `attack_recipe`'s `attacks:` section, in one process with the comparison's batch
    per optimizer step (so its unlearning stages are reused)."""
    if "attacks" not in attack_recipe:
        parser.error("--attacks: that recipe has no `attacks:` section.")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        parser.error("--attacks runs in one process: run it with python, not torchrun.")
    raw["attacks"] = copy.deepcopy(attack_recipe["attacks"])
    processes = int((raw.get("launch") or {}).get("num_processes", 1))
    for settings in (raw.get("unlearn") or {}, *raw["methods"].values()):
        if settings and "per_device_train_batch_size" in settings:
            settings["per_device_train_batch_size"] *= processes
    raw.setdefault("launch", {})["num_processes"] = 1


def relearn_curves(payload: dict, metric: str) -> dict[str, list[tuple[int, float]]]:
    """label -> [(relearning step, `metric`)] of every attacked method and of the two controls ('target (original)',
    'retain (retrained)'), from a `--attacks` result."""
    sources = {label: entry["attacks"]["results"] for label, entry in payload["methods"].items() if "attacks" in entry}
    controls = payload.get("attack_controls") or {}
    for name, label in (("original", "target (original)"), ("retrained", "retain (retrained)")):
        if RELEARN in controls.get(name, {}):
            sources[label] = controls[name]
    return {
        label: [(point["step"], point.get(metric)) for point in results[RELEARN]["checkpoints"]]
        for label, results in sources.items()
        if RELEARN in results
    }


def recovery_plot(payload: dict, path: Path) -> None:
    """One panel per metric of `RECOVERY_PLOT_METRICS` against the relearning steps: a line per method, the two
    controls dashed."""
    figure, axes = figure_axes(len(RECOVERY_PLOT_METRICS), figsize=(5 * len(RECOVERY_PLOT_METRICS), 4.5))
    for axis, metric in zip(axes, RECOVERY_PLOT_METRICS, strict=True):
        for label, points in relearn_curves(payload, metric).items():
            control = "(" in label
            axis.plot(
                [step for step, _ in points],
                [value for _, value in points],
                marker="o",
                linestyle="--" if control else "-",
                color=("k" if "original" in label else "grey") if control else None,
                label=label,
            )
        axis.set_xlabel("relearning steps on half of forget01")
        axis.set_title(metric)
    axes[0].set_ylabel("score (forget: the items never relearned)")
    axes[0].legend(fontsize=7)
    save_figure(figure, path)


def recovery_tables(payload: dict) -> str:
    """Markdown: the recovery of the forget Q_A prob, ROUGE and loss per method and attack (`recovery_table`)."""
    from hf_unlearn.attacks.suite import recovery_table

    methods = {label: entry["attacks"] for label, entry in payload["methods"].items() if "attacks" in entry}
    steps = sorted({step for points in relearn_curves(payload, PROB).values() for step, _ in points if step})
    return "\n\n".join(
        recovery_table(methods, metric, "model_utility", steps=steps, probe_metric="forget_loss")
        for metric in ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_loss")
    )


def write_attacks(results: dict, args, labels: list[str], level: float, load: dict, per_method: dict, seconds):
    """The run's results (models, methods with their `attacks`, `attack_controls`) as the `--attacks` record."""
    json_path = args.json or Path("benchmarks") / "results" / "tofu_mini_attacks.json"
    plot_path = args.plot or Path("docs") / "results" / "tofu_mini_recovery.png"
    payload = {
        "benchmark": "tofu_mini_attacks",
        "recipe": args.recipe,
        "attacks_recipe": args.attacks,
        "overrides": args.overrides,
        "stop_at": stop_condition(level),
        "methods_to_run": labels,
        "load_average": load,
        "per_method_run": per_method,
        "seconds": seconds,
        **results,
    }
    # The plotted points: (relearning step, value) per method and control, for each plotted metric.
    payload["relearn_curves"] = {metric: relearn_curves(payload, metric) for metric in RECOVERY_PLOT_METRICS}
    atomic_write_json(json_path, payload)
    recovery_plot(payload, plot_path)
    print(f"\n{recovery_tables(payload)}\n\nWrote {json_path} and {plot_path}.", flush=True)


def results_models(results: dict) -> dict[str, dict]:
    return {role: results["models"][role]["metrics"] for role in ("target", "retain")}


if __name__ == "__main__":
    main()
