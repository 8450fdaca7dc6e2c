"""IMU's cost against GA on the Markov task, for the same optimizer steps, in three regimes.

IMU pays one pass over the whole forget set (the influence scores) before its first step, and with ν > 0 again every
ν epochs; GA pays nothing extra. How much that matters depends on how much training it is amortised over:

- `spec4`: the reference Markov setting's 50 steps of batch 4 (GA touches 200 of the 8,000 forget sequences; IMU scores all 8,000);
- `epoch1` / `epoch5`: batch 32 for one / five passes' worth of steps over the forget set (250 / 1,250 steps), the
  regime of TOFU-style unlearning (5–10 epochs).

Each run is timed end to end (trainer construction + `train()`, which includes the influence pass), repeated with the
methods interleaved (3, 3 and 1 times), and the median is reported. Uses the original model cached by `hf-unlearn run markov`.

    python benchmarks/markov_imu_cost.py [--models-dir outputs/markov/models] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from datasets import concatenate_datasets
from transformers import GPT2LMHeadModel

from hf_unlearn import GAConfig, GATrainer, IMUConfig, IMUTrainer
from hf_unlearn.reporting import format_table
from hf_unlearn.runtime.io import atomic_write_json
from hf_unlearn.tasks.markov.data import make_markov_datasets

ROOT = Path(__file__).resolve().parent.parent
# name: (batch size, optimizer steps, repeats); the long regime runs once (its timings vary least)
REGIMES = {"spec4": (4, 50, 3), "epoch1": (32, 250, 3), "epoch5": (32, 1250, 1)}
# label: (trainer, config class, config overrides); same lr and optimizer as the Markov recipe.
METHODS = {
    "GA": (GATrainer, GAConfig, {}),
    "IMU (head, ν=0)": (IMUTrainer, IMUConfig, {"trainable": "head", "influence_weighting": {"update_epochs": 0}}),
    "IMU (all, ν=0)": (IMUTrainer, IMUConfig, {"trainable": "all", "influence_weighting": {"update_epochs": 0}}),
    "IMU (head, ν=1)": (IMUTrainer, IMUConfig, {"trainable": "head", "influence_weighting": {"update_epochs": 1}}),
}
SHARED = {
    "learning_rate": 5e-4,
    "weight_decay": 0.0,
    "adam_epsilon": 1e-6,
    "lr_scheduler_type": "constant",
    "save_strategy": "no",
    "logging_steps": 10_000,
    "disable_tqdm": True,
    "report_to": "none",
    "seed": 42,
}


def time_run(model_dir: Path, forget, trainer_class, config_class, overrides, batch_size, steps, out) -> float:
    model = GPT2LMHeadModel.from_pretrained(model_dir)
    started = time.perf_counter()
    args = config_class(
        output_dir=str(out), per_device_train_batch_size=batch_size, max_steps=steps, **SHARED, **overrides
    )
    if config_class is IMUConfig:
        args.influence_weighting["batch_size"] = 512
    trainer_class(model, args, forget_dataset=forget).train()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", default=str(ROOT / "outputs" / "markov" / "models"))
    parser.add_argument("--repeats", type=int, default=None, help="Repeats per regime (default: 3, 3, 1).")
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "markov_imu_cost.json"))
    parser.add_argument("--scratch", default="/tmp/hf_unlearn_cost")
    args = parser.parse_args()
    model_dir = Path(args.models_dir) / "original"
    if not (model_dir / "model.safetensors").is_file():
        raise SystemExit(f"No cached original model in {model_dir}: run `hf-unlearn run markov` first.")

    data = make_markov_datasets(seed=42)
    forget = concatenate_datasets([data["forget1_train"], data["forget2_train"]])
    load_before = os.getloadavg()
    seconds: dict[str, dict[str, list[float]]] = {r: {m: [] for m in METHODS} for r in args.regimes}
    for regime in args.regimes:
        batch_size, steps, repeats = REGIMES[regime]
        for repeat in range(args.repeats or repeats):
            for label, (trainer_class, config_class, overrides) in METHODS.items():
                if regime == "spec4" and "ν=1" in label:
                    continue  # 50 steps never reach a second epoch: identical to ν = 0
                wall = time_run(
                    model_dir,
                    forget,
                    trainer_class,
                    config_class,
                    overrides,
                    batch_size,
                    steps,
                    Path(args.scratch) / regime / label.replace(" ", "_"),
                )
                seconds[regime][label].append(wall)
                print(f"{regime} repeat {repeat}: {label} {wall:.1f} s", flush=True)

    results, rows = {}, []
    for regime, by_method in seconds.items():
        ga = statistics.median(by_method["GA"])
        results[regime] = {"batch_size": REGIMES[regime][0], "steps": REGIMES[regime][1], "methods": {}}
        for label, walls in by_method.items():
            if not walls:
                continue
            median = statistics.median(walls)
            results[regime]["methods"][label] = {"seconds": walls, "median_seconds": median, "ratio_to_GA": median / ga}
            rows.append([regime, label, median, median / ga])
    payload = {
        "benchmark": "markov_imu_cost",
        "what": "end-to-end wall time (trainer construction + train(), influence pass included) for the same "
        "optimizer steps; median of the repeats; no evaluation",
        "forget_set_size": len(forget),
        "regimes": results,
        "repeats": {regime: len(seconds[regime]["GA"]) for regime in seconds},
        "torch_threads": torch.get_num_threads(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "torch": torch.__version__,
    }
    atomic_write_json(args.out, payload)
    print(format_table(rows, ["regime", "method", "median wall (s)", "× GA"], precision=2))
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
