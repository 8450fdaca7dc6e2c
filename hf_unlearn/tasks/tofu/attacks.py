"""The TOFU task's `attacks` stage: every unlearned model (and, as controls, the target and retain models) attacked by
relearning, quantization and probes, each a cached stage; recovery of the TOFU forget metrics.

Relearning sets on this task: (a) `forget_subset`, a seeded subset of the unlearning forget rows (at most half of
them); the forget items of the evaluation that it contains are never scored, so every score comes from questions the
attack did not relearn; (b) `related`, rows of the unlearning retain set (other fictitious authors, same style). There
is no (c): TOFU's unrelated text (real authors, world facts) is what model utility is scored on. The recipe accepts
these attacks and sets only (`TOFU_ATTACKS`, `TOFU_RELEARN_SETS` in `recipe.py`).

Scores: the TOFU suite (`evaluate_rows`) on the evaluation's rows (cut to `attacks.eval_examples` per split), with
no retain reference (forget_quality needs the retain model's values of exactly the scored items), plus the
token-mean NLL of the scored forget and retain answers (`forget_loss`, `retain_loss`), which the probes also report.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = [
    "RECOVERY_METRICS",
    "UTILITY_METRICS",
    "attack_controls",
    "attack_method",
    "tofu_attack_inputs",
    "tofu_attacks_table",
]

# Forget metrics whose recovery is reported, and the utility the attack costs.
RECOVERY_METRICS = ["forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio", "forget_loss"]
UTILITY_METRICS = ["model_utility", "retain_loss"]
# What the evaluator keeps of the suite's summary.
_SUITE_METRICS = [
    "forget_Q_A_Prob",
    "forget_Q_A_ROUGE",
    "forget_truth_ratio",
    "extraction_strength",
    "model_utility",
    "model_utility_teacher_forced",
]


def tofu_attack_inputs(recipe, tokenizer) -> dict[str, Any]:
    """The relearning sets, the probe rows, the collator and the evaluator of this run's attacks."""
    from datasets import Dataset

    from ...attacks.relearning import relearn_split
    from ...attacks.suite import needs_calibration
    from ...data.chat import tokenize_dataset
    from ...data.pairing import pad_examples
    from ...evaluation.tofu import evaluate_rows, load_eval_rows
    from .data import select_rows

    args, data_dir = recipe.attacks, recipe.data_dir
    fmt = recipe.formatting.chat_format().kwargs()
    forget = select_rows(recipe.unlearn_data["forget"], data_dir)
    relearning = "relearn" in args.attacks
    subset: list[int] = []
    if relearning and "forget_subset" in args.relearn_sets:
        subset, _ = relearn_split(len(forget), min(args.relearn_rows, len(forget) // 2), seed=args.seed)
    relearned = {forget[i]["question"] for i in subset}
    count = args.eval_examples
    rows = load_eval_rows(recipe.forget_split, data_dir)
    rows["forget"] = [row for row in rows["forget"] if row["question"] not in relearned]
    rows = {split: split_rows if count is None else split_rows[:count] for split, split_rows in rows.items()}
    if not rows["forget"]:
        raise ValueError("attacks: no forget item is left to score outside the relearning subset.")
    # Limits are applied above: the suite scores every row it is given.
    eval_args = dataclasses.replace(recipe.evaluation, max_items=None, **{f"max_{split}_items": None for split in rows})

    def tokenized(pairs: list[dict[str, str]], desc: str) -> list[dict[str, Any]]:
        data = tokenize_dataset(Dataset.from_list(pairs), tokenizer, desc=desc, **fmt)
        return [{"input_ids": row["input_ids"], "labels": row["labels"]} for row in data]

    def pairs(split_rows, question="question"):
        return [{"question": row[question], "answer": row["answer"]} for row in split_rows]

    probes = {
        "forget": tokenized(pairs(rows["forget"]), "Attack probes (forget)"),
        "retain": tokenized(pairs(rows["retain"]), "Attack probes (retain)"),
    }
    if "paraphrase" in args.attacks:
        probes["paraphrase"] = tokenized(pairs(rows["forget"], "paraphrased_question"), "Attack probes (paraphrase)")
    pad_token_id = tokenizer.pad_token_id

    def evaluate(model) -> dict[str, float | None]:
        from ...attacks.probes import token_loss

        summary = evaluate_rows(model, tokenizer, eval_args, rows, None, data_dir=data_dir, show_progress=False)
        metrics = {key: summary.get(key) for key in _SUITE_METRICS}
        metrics["forget_loss"] = token_loss(model, probes["forget"], pad_token_id)
        metrics["retain_loss"] = token_loss(model, probes["retain"], pad_token_id)
        return metrics

    relearn_sets = {}
    if relearning:
        if "forget_subset" in args.relearn_sets:
            relearn_sets["forget_subset"] = Dataset.from_list(tokenized(pairs(forget.select(subset)), "Relearn rows"))
        if "related" in args.relearn_sets:
            retain = select_rows(recipe.unlearn_data["retain"], data_dir).shuffle(seed=args.seed)
            related = retain.select(range(min(args.relearn_rows, len(retain))))
            relearn_sets["related"] = Dataset.from_list(tokenized(pairs(related), "Relearn rows"))
    inputs = {
        "relearn_sets": relearn_sets,
        "probes": probes,
        "evaluator": evaluate,
        "data_collator": lambda batch: pad_examples(batch, pad_token_id),
        "pad_token_id": pad_token_id,
        # What the scores depend on besides the models and settings (for the stage fingerprint).
        "data": {"scored": rows, "relearned": sorted(relearned)},
    }
    if needs_calibration(args):  # the unlearning run's retain rows: text without the forget set
        retain = select_rows(recipe.unlearn_data["retain"], data_dir).shuffle(seed=args.seed + 1)
        retain = retain.select(range(min(args.calibration_rows, len(retain))))
        inputs["calibration"] = [row["input_ids"] for row in tokenized(pairs(retain), "Calibration rows")]
        inputs["data"]["calibration"] = inputs["calibration"]
    return inputs


def _fingerprint(recipe, inputs) -> dict[str, Any]:
    """What the TOFU scores depend on besides the models and the attack settings (the cached stage's key)."""
    from ...runtime.hashing import sha256_json

    return {
        "data": sha256_json(inputs["data"]),
        "relearn_sets": sha256_json({key: value.to_list() for key, value in inputs["relearn_sets"].items()}),
        "formatting": recipe.formatting.formatting(),
        "evaluation": recipe.evaluation.settings(),
    }


def attack_controls(log, recipe, models, inputs) -> dict[str, Any]:
    """The same attacks on the target (`original`) and retain (`retrained`) models, each a cached stage; with
    `attacks.controls: false` only their scores before any attack (the references of every recovery)."""
    from ...runtime.attack_stage import attack_controls as controls

    return controls(log, recipe, models, inputs, _fingerprint(recipe, inputs))


def attack_method(log, recipe, label, model, models, inputs, payload, controls) -> None:
    """Attack one unlearned model; its results and recovery rows go into `payload["methods"][label]["attacks"]`."""
    from ...attacks.suite import controls_recovery
    from ...runtime.attack_stage import attack_stage

    attacked = attack_stage(log, recipe, f"methods/{label}", model, models, inputs, _fingerprint(recipe, inputs))
    recovery = controls_recovery(attacked, controls, RECOVERY_METRICS, UTILITY_METRICS)
    payload["methods"][label]["attacks"] = {"results": attacked, "recovery": recovery}


def tofu_attacks_table(payload: dict[str, Any], metric: str = "forget_Q_A_Prob") -> str:
    """Markdown: per method, the recovery of `metric` under each attack (the probes: of the forget loss)."""
    from ...attacks.suite import recovery_table

    methods = {label: entry["attacks"] for label, entry in payload.get("methods", {}).items() if "attacks" in entry}
    return recovery_table(methods, metric, "model_utility", probe_metric="forget_loss")
