"""The Markov task's `attacks` stage: every unlearned model (and, as controls, the original and retrained models)
attacked by relearning, quantization and the logit lens, cached like any stage; the recovery table and curves.

Relearning sets on this task: (a) `forget_subset`, a seeded subset of the forget-1 training sequences (the chain the
original model learned; the scores come from the test sequences, none of which is relearned); (b) `related`, fresh
sequences of the forget-1 chain that unlearning never saw; (c) `unrelated`, retain training sequences.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...attacks.suite import AttackArguments, unsupported_attacks
from ...recipe import RecipeError

__all__ = [
    "MARKOV_ATTACKS",
    "RECOVERY_METRICS",
    "UTILITY_METRICS",
    "attack_controls",
    "attack_method",
    "attacks_table",
    "check_markov_attacks",
    "markov_attack_inputs",
    "plot_recovery_curves",
]

# What this task can run: the sequences have no paraphrase, GPT-2's 20 positions leave no room for few-shot context,
# and on a first-order chain scored by teacher forcing a prefix probe is only the plain loss of the later positions.
MARKOV_ATTACKS = ("relearn", "quant8", "quant4", "logit_lens")
# Forget metrics whose recovery is reported (forget-1: the chain the original learned), and the utility it costs.
RECOVERY_METRICS = ["forget1_loss", "forget_loss", "forget_kl"]
UTILITY_METRICS = ["retain_loss", "retain_kl"]


def check_markov_attacks(args: AttackArguments | None) -> None:
    if message := unsupported_attacks(args, "Markov", MARKOV_ATTACKS):
        raise RecipeError(message)


def markov_attack_inputs(recipe, data, pad_token_id: int, retrained) -> dict[str, Any]:
    """The relearning sets, the probe rows, the collator and the evaluator (on the first `attacks.eval_examples`
    test sequences of each split) of this run's attacks."""
    import numpy as np
    from datasets import Dataset

    from ...attacks.relearning import relearn_split
    from ...attacks.suite import needs_calibration
    from ...data.pairing import pad_examples
    from .data import CHAINS, sample_sequences
    from .evaluation import MarkovEvaluator

    args, settings = recipe.attacks, recipe.data
    size = args.relearn_rows
    forget1 = data["forget1_train"]
    subset, _ = relearn_split(len(forget1), size, seed=args.seed)
    rng = np.random.default_rng([recipe.seed, args.seed, 1])  # a stream the task's own data never draws from
    fresh = sample_sequences(rng, CHAINS["forget1"], size, settings.length, settings.num_states, settings.leakage)
    fresh = fresh.tolist()
    unrelated = data["retain_train"].shuffle(seed=args.seed).select(range(min(size, len(data["retain_train"]))))
    count = args.eval_examples
    test_sets = {
        name: split if count is None else split.select(range(min(count, len(split))))
        for name, split in ((name, data[f"{name}_test"]) for name in ("retain", "forget1", "forget2"))
    }
    evaluator = MarkovEvaluator(
        test_sets,
        retrained,
        pad_token_id,
        leakage=settings.leakage,
        num_states=settings.num_states,
        batch_size=recipe.evaluation.batch_size,
    )
    inputs = {
        "relearn_sets": {
            "forget_subset": forget1.select(subset),
            "related": Dataset.from_dict({"input_ids": fresh, "labels": fresh, "chain": ["forget1"] * len(fresh)}),
            "unrelated": unrelated,
        },
        "probes": {name: list(test_sets[name]) for name in ("forget1", "forget2", "retain")},
        "evaluator": evaluator,
        "data_collator": lambda rows: pad_examples(rows, pad_token_id),
        "pad_token_id": pad_token_id,
    }
    if needs_calibration(args):  # retain sequences: text without the forget chains
        calibration = data["retain_train"].shuffle(seed=args.seed + 1)
        inputs["calibration"] = calibration.select(range(min(args.calibration_rows, len(calibration))))["input_ids"]
    return inputs


def _fingerprint(recipe) -> dict[str, Any]:
    """What the Markov scores depend on besides the models and the attack settings (the cached stage's key)."""
    return {"data": recipe.settings()["data"], "evaluation_batch": recipe.evaluation.batch_size}


def attacks_table(payload: dict[str, Any], metric: str = "forget1_loss", steps=(10, 50, 100)) -> str:
    """Markdown: per method, the recovery of `metric` under each attack (relearning at `steps`), with the retrained
    model's in brackets and the retain-loss change after the attack."""
    from ...attacks.suite import recovery_table

    methods = {label: entry["attacks"] for label, entry in payload.get("methods", {}).items() if "attacks" in entry}
    return recovery_table(methods, metric, "retain_loss", steps)


def plot_recovery_curves(payload: dict[str, Any], path: Path, metric: str = "forget1_loss") -> Path | None:
    """Recovery of `metric` against relearning steps, one line per method (the retrained control dashed), one panel
    per relearning set."""
    methods = {label: entry["attacks"] for label, entry in payload.get("methods", {}).items() if "attacks" in entry}
    sets = sorted({row["attack"] for rows in methods.values() for row in rows["recovery"] if row["step"] is not None})
    if not sets:
        return None
    from ...reporting import figure_axes, save_figure

    figure, axes = figure_axes(len(sets), figsize=(4.5 * len(sets), 3.6))
    axes = [list(axes) if len(sets) > 1 else [axes]]
    for axis, attack in zip(axes[0], sets):
        control = None
        for label, rows in methods.items():
            points = [(row["step"], row["recovery"].get(metric)) for row in rows["recovery"] if row["attack"] == attack]
            points = [(step, value) for step, value in points if value is not None]
            if points:
                axis.plot(*zip(*points), marker="o", label=label)
            control = control or [
                (row["step"], row.get("retrained_recovery", {}).get(metric))
                for row in rows["recovery"]
                if row["attack"] == attack
            ]
        if control:
            points = [(step, value) for step, value in control if value is not None]
            if points:
                axis.plot(*zip(*points), linestyle="--", color="black", label="retrained (control)")
        axis.axhline(0, color="grey", linewidth=0.5)
        axis.set_title(attack)
        axis.set_xlabel("relearning steps")
    axes[0][0].set_ylabel(f"recovery of {metric}")
    axes[0][-1].legend(fontsize=7)
    save_figure(figure, path)
    return path


def attack_controls(log, recipe, models, inputs) -> dict[str, Any]:
    """The same attacks on the original and retrained models (`recipe.attacks.controls`), each a cached stage;
    without controls only the original's scores (the reference of every recovery)."""
    from ...runtime.attack_stage import attack_controls as controls

    return controls(log, recipe, models, inputs, _fingerprint(recipe))


def attack_method(log, recipe, label, model, models, inputs, results, controls) -> None:
    """Attack one unlearned model; its attacks' results and recovery rows go into `results["methods"][label]`."""
    from ...attacks.suite import controls_recovery
    from ...runtime.attack_stage import attack_stage

    attacked = attack_stage(log, recipe, f"methods/{label}", model, models, inputs, _fingerprint(recipe))
    recovery = controls_recovery(attacked, controls, RECOVERY_METRICS, UTILITY_METRICS)
    results["methods"][label]["attacks"] = {"results": attacked, "recovery": recovery}
