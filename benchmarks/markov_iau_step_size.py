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
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "markov.yaml"), help="The Markov recipe.")
    parser.add_argument("--method", default="IAU", help="The recipe's IAU entry whose settings (but η) are used.")
    parser.add_argument("--models-dir", type=Path, default=None, help="Default: the recipe's models folder.")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "markov_iau_step_size.json")
    args = parser.parse_args()

    from datasets import concatenate_datasets
    from transformers import GPT2LMHeadModel

    from hf_unlearn import IAUTrainer
    from hf_unlearn.recipe import build_method_config, load_recipe
    from hf_unlearn.reporting import format_table
    from hf_unlearn.runtime.io import atomic_write_json
    from hf_unlearn.tasks.markov.data import make_markov_datasets
    from hf_unlearn.tasks.markov.evaluation import MarkovEvaluator
    from hf_unlearn.tasks.markov.recipe import gpt2_config, method_original, parse_markov_recipe

    # Everything but η comes from the recipe, so this grid and the recipe's IAU row cannot drift apart.
    recipe = parse_markov_recipe(load_recipe(args.recipe))
    _, spec = method_original(recipe.methods[args.method], f"methods.{args.method}")
    if spec.get("method") != "IAU":
        raise SystemExit(f"methods.{args.method} is {spec.get('method')!r}, not an IAU entry.")
    models_dir = args.models_dir or recipe.models_path
    data = make_markov_datasets(recipe.data, seed=recipe.seed)
    max_length = max(len(data[f"{name}_train"][0]["input_ids"]) for name in ("retain", "forget1", "forget2"))
    pad_token_id = gpt2_config(recipe.model_settings, max_length).pad_token_id
    original = GPT2LMHeadModel.from_pretrained(models_dir / "original")
    original.config.pad_token_id = pad_token_id
    retrained = GPT2LMHeadModel.from_pretrained(models_dir / "retrained")
    tests = {name: data[f"{name}_test"] for name in ("retain", "forget1", "forget2")}
    evaluate = MarkovEvaluator(
        tests,
        retrained,
        pad_token_id,
        leakage=recipe.data.leakage,
        num_states=recipe.data.num_states,
        batch_size=recipe.evaluation.batch_size,
    )
    forget = concatenate_datasets([data["forget1_train"], data["forget2_train"]])
    stepped = copy.deepcopy(original)
    overrides = {"learning_rate": 1.0, "report_to": "none", "save_strategy": "no", "disable_tqdm": True}
    config = build_method_config({**spec, **overrides}, recipe.shared_unlearn, Path("/tmp/markov_iau_step_size"))
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
    settings = {"recipe_method": args.method, "config": {k: v for k, v in spec.items() if k != "learning_rate"}}
    atomic_write_json(
        args.output,
        {"settings": settings, "pass_seconds": seconds, "step_norm_at_eta_1": step_norm, "eta": results},
    )


if __name__ == "__main__":
    main()
