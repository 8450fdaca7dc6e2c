"""What the double backward of gradient restriction (GR) and MU-Mis costs on the Markov task, against plain steps.

Per variant, in a fresh process (so peak memory is its own): the median time of one optimizer step (after 3 warm-up
steps), the bytes the autograd graph of one step keeps for backward (unique saved tensors, counted through
`torch.autograd.graph.saved_tensors_hooks`, so the second-order graph of `create_graph=True` is included), and the
peak RSS above a process that only loads the model and data. One thread, the cached original model of
`hf-unlearn run markov`.

- `train-plain` / `train-GR`: a training step of the original model (batch 128 of retain ∪ forget-1), plain and with
  ℓ + α‖∇_θ ℓ‖ (IAU's training phase);
- `GA`: an unlearning step at the Markov recipe's batch 4 (one forward + backward);
- `MU-Mis k=…`: an MU-Mis step at batch 4 with k answer positions per sequence (19 = all).

    python benchmarks/markov_double_backward_cost.py [--models-dir outputs/markov/models] [--steps 15]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ["load-only", "train-plain", "train-GR", "GA", "MU-Mis k=1", "MU-Mis k=4", "MU-Mis k=19"]


def saved_bytes(step) -> int:
    """Unique bytes of the tensors autograd saves while `step()` builds its graph(s)."""
    import torch

    seen: dict[tuple, int] = {}

    def pack(tensor):
        if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
            key = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
            seen[key] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = step()
    del loss
    return sum(seen.values())


def run_variant(name: str, models_dir: Path, steps: int) -> dict:
    import torch
    from datasets import concatenate_datasets
    from transformers import GPT2LMHeadModel, Trainer, TrainingArguments

    from hf_unlearn import (
        GAConfig,
        GATrainer,
        GradientRestriction,
        GradientRestrictionTrainer,
        MUMisConfig,
        MUMisTrainer,
    )
    from hf_unlearn.data.pairing import pad_examples
    from hf_unlearn.tasks.markov.data import make_markov_datasets

    torch.set_num_threads(1)
    data = make_markov_datasets(seed=42)
    model = GPT2LMHeadModel.from_pretrained(models_dir / "original")
    model.config.pad_token_id = 10
    forget = concatenate_datasets([data["forget1_train"], data["forget2_train"]])
    common = {"output_dir": "/tmp/double_backward_cost", "report_to": "none", "save_strategy": "no",
              "disable_tqdm": True, "logging_steps": 10_000, "max_steps": steps + 3, "seed": 42}  # fmt: skip
    if name == "load-only":
        return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if name.startswith("train"):
        train = concatenate_datasets([data["retain_train"], data["forget1_train"]])
        args = TrainingArguments(
            per_device_train_batch_size=128, learning_rate=5e-4, remove_unused_columns=False, **common
        )
        kwargs = {
            "model": model,
            "args": args,
            "train_dataset": train,
            "data_collator": lambda rows: pad_examples(rows, 10),
        }
        if name == "train-GR":
            trainer = GradientRestrictionTrainer(**kwargs, gradient_restriction=GradientRestriction(weight=0.005))
        else:
            trainer = Trainer(**kwargs)
        batch = kwargs["data_collator"]([train[i] for i in range(128)])
    else:
        shared = {"per_device_train_batch_size": 4, "learning_rate": 5e-4, **common}
        if name == "GA":
            trainer = GATrainer(model, GAConfig(**shared), forget_dataset=forget)
        else:
            k = int(name.split("k=")[1])
            trainer = MUMisTrainer(model, MUMisConfig(positions_per_sequence=k, **shared), forget_dataset=forget)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])

    times: list[float] = []

    class Timer(__import__("transformers").TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.tick = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.tick)

    trainer.add_callback(Timer())
    trainer.train()
    graph = saved_bytes(lambda: trainer.compute_loss(trainer.model, batch))
    return {
        "step_seconds": statistics.median(times[3:]),
        "graph_mb": graph / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "outputs" / "markov" / "models")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument(
        "--output", type=Path, default=ROOT / "benchmarks" / "results" / "markov_double_backward_cost.json"
    )
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.models_dir, args.steps)))
        return
    from hf_unlearn.reporting import format_table
    from hf_unlearn.runtime.io import atomic_write_json

    results = {}
    for name in VARIANTS:
        command = [sys.executable, __file__, "--variant", name, "--models-dir", str(args.models_dir),
                   "--steps", str(args.steps)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, results[name], flush=True)
    base = results.pop("load-only")["peak_rss_mb"]
    for values in results.values():
        values["rss_above_load_mb"] = values["peak_rss_mb"] - base
    rows = [[name, v["step_seconds"] * 1000, v["graph_mb"], v["rss_above_load_mb"]] for name, v in results.items()]
    print(format_table(rows, ["variant", "ms / step", "graph MB", "peak RSS above load (MB)"]))
    atomic_write_json(args.output, {"steps": args.steps, "threads": 1, "load_only_rss_mb": base, "variants": results})


if __name__ == "__main__":
    main()
