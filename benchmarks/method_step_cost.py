"""Cost of one optimizer step of every method, relative to GA, on the Markov model.

    python benchmarks/method_step_cost.py [--steps 20] [--rounds 5]

Every method of `METHODS` trains the cached Markov original model (`outputs/markov/models`: run `hf-unlearn run
markov` once first) with its entry of `recipes/markov.yaml` at the same batch (4 forget rows, plus 4 retain rows for
the methods with a retain term). IAU's one step is a pass over all of Df ∪ Dr whatever the batch (its recipe: one
step, micro-batches of 512), so its one step is timed as its recipe takes it: its ratio is that of its whole
unlearning to one GA step. The time of `--steps` optimizer steps is measured after `--warmup` steps, with no
evaluation; the one-off work before the first step (a frozen reference copy, NPO's reference pass over the forget
set, IMU's influence pass) is reported apart as `setup_seconds`. The methods run in turn, `--rounds` times, in
alternating order (forward, then backward), so slow phases of a shared machine spread over all of them; the table is
the median over rounds of the process's CPU seconds per step (wall-clock time swings with the other jobs of a shared
machine; one thread, so CPU time is the work done), and each method's ratio to GA's median; wall-clock medians are
kept beside it. Writes
`benchmarks/results/method_step_cost.json`.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from datasets import concatenate_datasets
from transformers import GPT2LMHeadModel, TrainerCallback

from hf_unlearn.recipe import build_method_config, load_recipe
from hf_unlearn.reporting import format_table
from hf_unlearn.runtime.io import atomic_write_json
from hf_unlearn.runtime.versions import environment_versions
from hf_unlearn.tasks.markov import make_markov_datasets, parse_markov_recipe
from hf_unlearn.tasks.markov.recipe import gpt2_config, method_original
from hf_unlearn.trainers import METHODS

ROOT = Path(__file__).resolve().parent.parent


class _StepClock(TrainerCallback):
    """Wall-clock and process CPU time at the start of training and at the end of every optimizer step."""

    def __init__(self):
        self.begin = None
        self.ends: dict[int, tuple[float, float]] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin = (time.perf_counter(), time.process_time())

    def on_step_end(self, args, state, control, **kwargs):
        self.ends[state.global_step] = (time.perf_counter(), time.process_time())


def time_method(name, spec, shared, model, data, warmup: int, steps: int) -> dict:
    """Seconds per step over `steps` steps after `warmup`, and the setup before the first step."""
    settings = {
        **shared,
        "max_steps": warmup + steps,
        "logging_steps": 10**6,
        "disable_tqdm": True,
        "report_to": "none",
        "save_strategy": "no",
    }
    overrides = {"per_device_train_batch_size": shared["per_device_train_batch_size"], "max_steps": warmup + steps}
    if name == "IAU":  # one step is a pass over all of Df ∪ Dr, whatever the batch: its recipe's one step, timed
        warmup, steps = 0, 1
        overrides = {"max_steps": 1}
        settings["max_steps"] = 1
    with tempfile.TemporaryDirectory() as folder:
        config = build_method_config({**spec, **overrides}, settings, folder)
        clock = _StepClock()
        trainer = METHODS[name][1](
            copy.deepcopy(model),
            config,
            forget_dataset=data["forget"],
            retain_dataset=data["retain"],
            callbacks=[clock],
        )
        tick = time.perf_counter()
        trainer.train()
        del trainer
    start = clock.ends[warmup] if warmup else clock.begin
    end = clock.ends[warmup + steps]
    return {
        "cpu_seconds_per_step": (end[1] - start[1]) / steps,
        "seconds_per_step": (end[0] - start[0]) / steps,
        "setup_seconds": clock.begin[0] - tick,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--models-dir", type=Path, default=ROOT / "outputs" / "markov" / "models")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/method_step_cost.json")
    parser.add_argument("--load", default="", help="What else ran on the machine (recorded with the numbers).")
    args = parser.parse_args()
    if "GA" not in args.methods:
        parser.error("--methods must include GA (the ratios are to GA).")

    raw = load_recipe(ROOT / "recipes" / "markov.yaml")
    raw["methods"] = {name: raw["methods"][name] for name in args.methods}  # the entries named by method
    recipe = parse_markov_recipe(raw)
    shared = recipe.shared_unlearn
    specs = {name: method_original(recipe.methods[name])[1] for name in args.methods}
    datasets = make_markov_datasets(recipe.data, seed=recipe.seed)
    data = {
        "forget": concatenate_datasets([datasets["forget1_train"], datasets["forget2_train"]]),
        "retain": datasets["retain_train"],
    }
    model = GPT2LMHeadModel.from_pretrained(args.models_dir / "original", use_safetensors=True)
    model.config.pad_token_id = gpt2_config(recipe.model_settings, recipe.data.length).pad_token_id
    torch.manual_seed(0)

    samples: dict[str, list[dict]] = {name: [] for name in args.methods}
    for round_index in range(args.rounds):
        order = args.methods if round_index % 2 == 0 else list(reversed(args.methods))
        for name in order:
            samples[name].append(time_method(name, specs[name], shared, model, data, args.warmup, args.steps))
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)

    ga = statistics.median(s["cpu_seconds_per_step"] for s in samples["GA"])
    ga_wall = statistics.median(s["seconds_per_step"] for s in samples["GA"])
    table = {}
    for name in args.methods:
        median = statistics.median(s["cpu_seconds_per_step"] for s in samples[name])
        wall = statistics.median(s["seconds_per_step"] for s in samples[name])
        table[name] = {
            "median_cpu_seconds_per_step": median,
            "relative_to_ga": median / ga,
            "median_seconds_per_step": wall,
            "wall_relative_to_ga": wall / ga_wall,
            "median_setup_seconds": statistics.median(s["setup_seconds"] for s in samples[name]),
            "samples": samples[name],
            "settings": specs[name]
            if name == "IAU"
            else {**specs[name], "per_device_train_batch_size": shared["per_device_train_batch_size"]},
        }
    payload = {
        "benchmark": "method_step_cost",
        "model": "Markov GPT-2 (4 layers, width 128), cached original",
        "batch": shared["per_device_train_batch_size"],
        "steps": args.steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "statistic": "median over rounds of the process CPU seconds per optimizer step (relative_to_ga; wall-clock "
        "seconds beside it); rounds alternate the method order",
        "threads": torch.get_num_threads(),
        "load": args.load,
        "methods": table,
        "environment": environment_versions(),
    }
    atomic_write_json(args.json, payload)
    rows = [
        [
            name,
            1000 * entry["median_cpu_seconds_per_step"],
            entry["relative_to_ga"],
            entry["wall_relative_to_ga"],
            entry["median_setup_seconds"],
        ]
        for name, entry in table.items()
    ]
    print(format_table(rows, ["method", "CPU ms / step", "× GA (CPU)", "× GA (wall)", "setup (s)"]))
    print(f"Wrote {args.json}.")


if __name__ == "__main__":
    main()
