"""IAU's step size η on the Markov task: one IAU pass gives the direction d = mean_Dr ∇ℓ − mean_Df ∇ℓ (at η = 1, plain
SGD, so θ_1 − θ_0 = −d), and the single-step model θ_0 − η·d is evaluated for every η of the grid (the step is linear
in η, so one pass serves them all). Used to pick `recipes/markov.yaml`'s IAU η; writes
`benchmarks/results/markov_iau_step_size.json`.

    python benchmarks/markov_iau_step_size.py [--models-dir outputs/markov/models]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRID = [0.1, 0.2, 0.3, 0.5, 1.0, 3.0, 10.0, 30.0, 100.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "outputs" / "markov" / "models")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "markov_iau_step_size.json")
    args = parser.parse_args()

    from datasets import concatenate_datasets
    from transformers import GPT2LMHeadModel

    from hf_unlearn import IAUConfig, IAUTrainer
    from hf_unlearn.reporting import format_table
    from hf_unlearn.runtime.io import atomic_write_json
    from hf_unlearn.tasks.markov.data import make_markov_datasets
    from hf_unlearn.tasks.markov.evaluation import MarkovEvaluator

    data = make_markov_datasets(seed=42)
    original = GPT2LMHeadModel.from_pretrained(args.models_dir / "original")
    original.config.pad_token_id = 10
    retrained = GPT2LMHeadModel.from_pretrained(args.models_dir / "retrained")
    tests = {name: data[f"{name}_test"] for name in ("retain", "forget1", "forget2")}
    evaluate = MarkovEvaluator(tests, retrained, 10, leakage=0.2, num_states=10, batch_size=1024)
    forget = concatenate_datasets([data["forget1_train"], data["forget2_train"]])
    stepped = copy.deepcopy(original)
    config = IAUConfig(output_dir="/tmp/markov_iau_step_size", learning_rate=1.0, normalization="mean",
                       per_device_train_batch_size=512, report_to="none", save_strategy="no", disable_tqdm=True,
                       seed=42)  # fmt: skip
    tick = time.perf_counter()
    IAUTrainer(stepped, config, forget_dataset=forget, retain_dataset=data["retain_train"]).train()
    seconds = time.perf_counter() - tick
    before, after = original.state_dict(), stepped.state_dict()
    step = {key: after[key] - before[key] for key in before if before[key].is_floating_point()}  # −d
    results, rows = {}, []
    for eta in GRID:
        model = copy.deepcopy(original)
        model.load_state_dict({key: value + eta * step[key] if key in step else value for key, value in before.items()})
        results[str(eta)] = evaluate(model)
        r = results[str(eta)]
        rows.append([eta, r["retain_loss"], r["retain_kl"], r["forget_loss"], r["forget_kl"], r["forget1_loss"],
                     r["forget2_loss"]])  # fmt: skip
    print(format_table(rows, ["η", "ℓ_r ↓", "ℓ_r^KL ↓", "ℓ_f ↑", "ℓ_f^KL ↑", "ℓ_f1", "ℓ_f2"]))
    step_norm = sum(float(value.pow(2).sum()) for value in step.values()) ** 0.5
    atomic_write_json(args.output, {"pass_seconds": seconds, "step_norm_at_eta_1": step_norm, "eta": results})


if __name__ == "__main__":
    main()
