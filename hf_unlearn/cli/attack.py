"""`hf-unlearn attack`: attack a saved unlearned model and report how much of the forgotten knowledge comes back.

    hf-unlearn attack --model UNLEARNED --original ORIGINAL [--retrained RETRAINED] --task markov \\
        --attacks relearn,quant8,quant4,logit_lens [--recipe markov] [--output-dir DIR]
    hf-unlearn attack --model UNLEARNED --original TARGET [--retrained RETAIN] --task tofu --data-dir TOFU \\
        --attacks relearn,quant8,paraphrase,prefix [--recipe tofu/mini_smollm2]

The recipe (an embedded name or a file) gives the task's data and, when it has one, its `attacks` section; the flags
override that section. Recovery of each forget metric M: (M(attacked) − M(unlearned)) / (M(original) − M(unlearned)),
with the same attack on `--retrained` as the control. Writes `attacks.json` to `--output-dir` and prints the table.
On TOFU the models are local folders of full models (the original: the target, the retrained: the retain model); the
recipe gives the data, the formatting and the evaluation settings, not the models.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..attacks.record import QUANT_BACKENDS

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "hf-unlearn attack") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="The unlearned model (a local folder).")
    parser.add_argument("--original", required=True, help="The model before unlearning (a local folder).")
    parser.add_argument("--retrained", default=None, help="The model trained without the forget set (the control).")
    parser.add_argument("--task", choices=["markov", "tofu"], default="markov", help="Which benchmark scores them.")
    parser.add_argument(
        "--attacks",
        default=None,
        help="Comma-separated: relearn, quant8, quant4, paraphrase, prefix, few_shot, logit_lens "
        "(default: the recipe's attacks section, else relearn,quant8,quant4,logit_lens).",
    )
    parser.add_argument("--recipe", default=None, help="The task's recipe (name or file; default: the task's own).")
    parser.add_argument("--output-dir", default=None, help="Where attacks.json is written (default: print only).")
    parser.add_argument("--data-dir", default=None, help="TOFU only: a local TOFU folder (default: the recipe's).")
    parser.add_argument("--relearn-lr", type=float, default=None, help="Relearning learning rate (default 1e-5).")
    parser.add_argument("--relearn-steps", default=None, help="Comma-separated scored steps (default 0,10,25,50,100).")
    parser.add_argument("--relearn-rows", type=int, default=None, help="Rows per relearning set (default 100).")
    parser.add_argument("--quant-backend", choices=list(QUANT_BACKENDS), default=None)
    return parser


def main(args: argparse.Namespace) -> int:
    from ..recipe import load_recipe

    if args.data_dir is not None and args.task != "tofu":
        raise ValueError("--data-dir applies to --task tofu only (the Markov data is generated).")
    raw = load_recipe(args.recipe or ("markov" if args.task == "markov" else "tofu/mini_smollm2"))
    section = dict(raw.get("attacks") or {})
    if args.attacks is not None:
        section["attacks"] = [name.strip() for name in args.attacks.split(",") if name.strip()]
    relearn = dict(section.get("relearn") or {})
    if args.relearn_lr is not None:
        relearn["learning_rate"] = args.relearn_lr
    if args.relearn_steps is not None:
        relearn["steps"] = [int(step) for step in args.relearn_steps.split(",")]
    section["relearn"] = relearn
    if args.relearn_rows is not None:
        section["relearn_rows"] = args.relearn_rows
    if args.quant_backend is not None:
        section["quant_backend"] = args.quant_backend
    section["controls"] = args.retrained is not None
    raw = {**raw, "attacks": section}
    if args.task == "tofu":
        payload = _attack_tofu(raw, args)
        from ..tasks.tofu.attacks import tofu_attacks_table

        print(tofu_attacks_table({"methods": {"unlearned": payload["unlearned"]}}))
        _write(payload, args.output_dir)
        return 0
    from ..tasks.markov.recipe import parse_markov_recipe

    recipe = parse_markov_recipe(raw, output_dir=args.output_dir)
    payload = _attack_markov(recipe, args.model, args.original, args.retrained)
    from ..tasks.markov.attacks import attacks_table

    print(attacks_table({"methods": {"unlearned": payload["unlearned"]}}))
    _write(payload, args.output_dir)
    return 0


def _write(payload: dict, output_dir: str | None) -> None:
    if output_dir is not None:
        from ..runtime.io import atomic_write_json

        Path(output_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(output_dir) / "attacks.json", payload)
        print(f"Wrote {Path(output_dir) / 'attacks.json'}.")


def _check_folders(paths: dict[str, str | None]) -> None:
    for name, path in paths.items():
        if path is not None and not Path(path).is_dir():
            raise FileNotFoundError(f"--{name if name != 'unlearned' else 'model'}: {path} is not a folder.")


def _attack_tofu(raw: dict, args: argparse.Namespace) -> dict:
    """The TOFU suite and the attacks on the three models (the recipe's data, formatting and evaluation settings)."""
    from ..tasks.tofu.attacks import RECOVERY_METRICS, UTILITY_METRICS, tofu_attack_inputs
    from ..tasks.tofu.pipeline import load_attack_model
    from ..tasks.tofu.recipe import ModelSpec, parse_tofu_recipe

    paths = {"unlearned": args.model, "original": args.original, "retrained": args.retrained}
    _check_folders(paths)
    raw = dict(raw)
    raw["models"] = {
        "target": {"name_or_path": args.original},
        "retain": {"name_or_path": args.retrained or args.original},
    }
    raw["methods"], raw["finetune"], raw["finetune_lora"] = {}, {}, None
    recipe = parse_tofu_recipe(raw, output_dir=args.output_dir, data_dir=args.data_dir, require_methods=False)
    models, tokenizer = {}, None
    for name, path in paths.items():
        if path is not None:
            models[name], loaded = load_attack_model(ModelSpec(path))
            tokenizer = tokenizer or loaded
    inputs = tofu_attack_inputs(recipe, tokenizer)

    return _attack_and_recover(models, recipe.attacks, inputs, RECOVERY_METRICS, UTILITY_METRICS)


def _attack_markov(recipe, model_path: str, original_path: str, retrained_path: str | None) -> dict:
    """Score the three models on the recipe's test sets, attack them, and the recovery rows of the unlearned one."""
    from transformers import GPT2LMHeadModel

    from ..tasks.markov.attacks import RECOVERY_METRICS, UTILITY_METRICS, markov_attack_inputs
    from ..tasks.markov.data import make_markov_datasets

    paths = {"unlearned": model_path, "original": original_path, "retrained": retrained_path}
    _check_folders(paths)
    models = {name: GPT2LMHeadModel.from_pretrained(path) for name, path in paths.items() if path is not None}
    data = make_markov_datasets(recipe.data, seed=recipe.seed)
    pad_token_id = models["original"].config.pad_token_id
    inputs = markov_attack_inputs(recipe, data, pad_token_id, models.get("retrained"))

    return _attack_and_recover(models, recipe.attacks, inputs, RECOVERY_METRICS, UTILITY_METRICS)


def _attack_and_recover(models: dict, attacks, inputs: dict, recovery_metrics: list, utility_metrics: list) -> dict:
    """The attacks on the controls (original, retrained when given) and on the unlearned model, and its recovery."""
    from ..attacks.suite import controls_recovery, run_task_attacks

    def attack(model):
        progress = lambda line: print(f"  {line}", flush=True)
        return run_task_attacks(model, attacks, inputs, original=models["original"], progress=progress)

    controls = {name: attack(models[name]) for name in ("original", "retrained") if name in models}
    attacked = attack(models["unlearned"])
    recovery = controls_recovery(attacked, controls, recovery_metrics, utility_metrics)
    entry = {"attacks": {"results": attacked, "recovery": recovery}}
    return json.loads(json.dumps({"unlearned": entry, "attack_controls": controls}))
