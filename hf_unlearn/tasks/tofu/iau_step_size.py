"""IAU's step size η on TOFU: one IAU pass at η = 1 (plain SGD, so θ_1 − θ_0 = −d with d = mean_Dr ∇ℓ − mean_Df ∇ℓ)
gives the direction, and θ_0 − η·d is scored for every η of a grid with the cheap teacher-forced evaluation of
`trajectory:` (first 50 forget / holdout and 25 utility items, no generation). The step is linear in η, so one pass
serves the whole grid. The retain model gets the same evaluation: the η whose forget Q_A prob comes closest to the
retain model's (on a log scale) is the "matched" step, the one to put in the recipe's IAU entry.

    python benchmarks/tofu_iau_step_size.py --data-dir path/to/tofu   # after `hf-unlearn finetune` of the recipe

Everything but η comes from the recipe (default `tofu/forget05_smollm2`, its `IAU` entry: the same normalisation and
seeded retain subset), and the fine-tuned target and retain models from its models folder (it refuses to run when
they are not there: fine-tuning here would not be the recipe's launch). One process: the pass sums the same
gradients as a multi-process run. Writes `benchmarks/results/tofu_iau_step_size_<name>.json`, relative to the working
directory (run it from the repository root); `benchmarks/tofu_iau_step_size.py` is its command line.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

GRID = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]
METRICS = ("forget_Q_A_Prob", "forget_truth_ratio", "retain_Q_A_Prob", "mia_min_k")


def matched_step(grid: dict[str, dict], reference: float) -> str:
    """The η (a key of `grid`) whose forget Q_A prob is closest to `reference` in log space."""
    return min(grid, key=lambda eta: abs(math.log(max(grid[eta]["forget_Q_A_Prob"], 1e-300) / reference)))


def one_process(raw: dict) -> dict:
    """The recipe for this one-process script: the fine-tune's batch per process times the recipe's process count,
    so the fingerprints (batch per optimizer step) find the models `hf-unlearn finetune` made in its launch."""
    raw = copy.deepcopy(raw)
    launch = raw.setdefault("launch", {})
    processes = launch.get("num_processes", 1)
    if processes > 1 and "finetune" in raw:
        raw["finetune"]["per_device_train_batch_size"] = (
            raw["finetune"].get("per_device_train_batch_size", 8) * processes
        )
    launch["num_processes"] = 1
    return raw


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="tofu/forget05_smollm2", help="A TOFU recipe (embedded name or path).")
    parser.add_argument("--method", default="IAU", help="The recipe's IAU entry whose settings (but η) are used.")
    parser.add_argument("--data-dir", default=None, help="Local TOFU folder (default: the recipe's, else the Hub).")
    parser.add_argument("--models-dir", type=Path, default=None, help="Default: the recipe's models folder.")
    parser.add_argument("--grid", nargs="+", type=float, default=GRID, help="The step sizes η.")
    parser.add_argument("--max-forget-items", type=int, default=50)
    parser.add_argument("--max-utility-items", type=int, default=25)
    parser.add_argument("--output", type=Path, default=None, help="Default: benchmarks/results/<script>_<name>.json")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="Trainer scratch (default: outputs/<script>_<name>)."
    )
    args = parser.parse_args(argv)

    from hf_unlearn.data.chat import tokenize_dataset
    from hf_unlearn.evaluation.tofu import TEACHER_FORCED_UTILITY, evaluate_tofu
    from hf_unlearn.recipe import build_method_config, load_recipe
    from hf_unlearn.reporting import format_table
    from hf_unlearn.runtime.cache import StageLog
    from hf_unlearn.runtime.io import atomic_write_json
    from hf_unlearn.runtime.versions import environment_versions
    from hf_unlearn.tasks.tofu.data import select_rows
    from hf_unlearn.tasks.tofu.finetune import ensure_models, load_model
    from hf_unlearn.tasks.tofu.recipe import TrajectoryArguments, parse_tofu_recipe
    from hf_unlearn.trainers import IAUTrainer

    raw = one_process(load_recipe(args.recipe))
    name = Path(args.recipe).stem.split("_", 1)[-1]
    scratch = args.work_dir or Path("outputs") / f"tofu_iau_step_size_{name}"
    plan = parse_tofu_recipe(raw, models_dir=args.models_dir, data_dir=args.data_dir)
    spec = plan.specs.get(args.method)
    if spec is None or spec.get("method") != "IAU":
        raise SystemExit(f"methods.{args.method} of {args.recipe} is not an IAU entry.")
    try:  # fine-tuning here would run one process, not the recipe's launch: only cached models are used
        models = ensure_models(plan, StageLog(scratch / "stages.json", {}), train=False)
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from None
    cheap = TrajectoryArguments(
        max_forget_items=args.max_forget_items, max_utility_items=args.max_utility_items
    ).eval_arguments(plan.evaluation)

    def evaluate(model, tokenizer) -> dict[str, float]:
        summary = evaluate_tofu(model, tokenizer, cheap, data_dir=plan.data_dir, show_progress=False)
        return {key: summary[key] for key in (*METRICS, TEACHER_FORCED_UTILITY)}

    retain_model, tokenizer = load_model(models["retain"])
    tick = time.perf_counter()
    reference = evaluate(retain_model, tokenizer)
    eval_seconds = [time.perf_counter() - tick]
    del retain_model

    original, tokenizer = load_model(models["target"])
    fmt = plan.formatting.chat_format().kwargs()
    forget = tokenize_dataset(select_rows(plan.unlearn_data["forget"], plan.data_dir), tokenizer, **fmt)
    retain = tokenize_dataset(select_rows(plan.unlearn_data["retain"], plan.data_dir), tokenizer, **fmt)
    overrides = {"learning_rate": 1.0, "report_to": "none", "save_strategy": "no", "disable_tqdm": True}
    config = build_method_config({**spec, **overrides}, plan.unlearn, scratch / "trainer")
    stepped = copy.deepcopy(original)
    tick = time.perf_counter()
    IAUTrainer(stepped, config, forget_dataset=forget, retain_dataset=retain, processing_class=tokenizer).train()
    pass_seconds = time.perf_counter() - tick
    before = {key: value.clone() for key, value in original.state_dict().items()}  # `original` is reloaded below
    after = stepped.state_dict()
    step = {key: after[key] - before[key] for key in before if before[key].is_floating_point()}  # −d
    del stepped

    results = {}
    for eta in [0.0, *args.grid]:  # η = 0: the target itself, on the same items
        original.load_state_dict(
            {key: value + eta * step[key] if key in step else value for key, value in before.items()}
        )
        tick = time.perf_counter()
        results[f"{eta:g}"] = evaluate(original, tokenizer)
        eval_seconds.append(time.perf_counter() - tick)
        print(f"η = {eta:g}: {results[f'{eta:g}']}", flush=True)
    grid = {eta: row for eta, row in results.items() if eta != "0"}
    best = matched_step(grid, reference["forget_Q_A_Prob"])
    rows = [[label, *(row[key] for key in (*METRICS, TEACHER_FORCED_UTILITY))] for label, row in
            [("retain model", reference), *((f"η = {eta}", row) for eta, row in results.items())]]  # fmt: skip
    print(format_table(rows, ["model", *METRICS, TEACHER_FORCED_UTILITY]))
    print(f"Matched step (forget Q_A prob closest to the retain model's): η = {best}")
    step_norm = sum(float(value.pow(2).sum()) for value in step.values()) ** 0.5
    output = args.output or Path("benchmarks") / "results" / f"tofu_iau_step_size_{name}.json"
    atomic_write_json(
        output,
        {
            "recipe": args.recipe,
            "settings": {
                "recipe_method": args.method,
                "config": {k: v for k, v in spec.items() if k != "learning_rate"},
            },
            "evaluation": {
                "max_forget_items": args.max_forget_items,
                "max_utility_items": args.max_utility_items,
                "teacher_forced_only": True,
            },
            "retain_model": reference,
            "eta": results,
            "matched_eta": float(best),
            "step_norm_at_eta_1": step_norm,
            "pass_seconds": pass_seconds,
            "eval_seconds_median": sorted(eval_seconds)[len(eval_seconds) // 2],
            "environment": environment_versions(),
        },
    )
    print(f"Wrote {output}.")
