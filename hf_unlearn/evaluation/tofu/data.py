"""The rows TOFU evaluation reads: the config of each split, what each split is scored for, and the rows themselves
(loaded, checked and cut to the item limits before any model pass).

| split (config)                             | scored for                                                           |
|--------------------------------------------|----------------------------------------------------------------------|
| forget (`forgetXX_perturbed`)              | Q_A_Prob, ROUGE, truth ratio (paraphrased vs perturbed), ES, EM, MIAs |
| holdout (`holdoutXX`)                      | MIAs (the non-member side of the AUC)                                |
| retain (`retain_perturbed`)                | Q_A_Prob, ROUGE, truth ratio (paraphrased vs perturbed) -> utility   |
| real_authors / world_facts (`*_perturbed`) | normalised prob, ROUGE, truth ratio (answer vs perturbed) -> utility |
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

from ...data.tofu import FORGET_SPLITS, load_tofu

__all__ = ["SPLITS", "SPLIT_KINDS", "check_holdout", "load_eval_rows", "tofu_split_configs"]

SPLITS = ("forget", "holdout", "retain", "real_authors", "world_facts")


def tofu_split_configs(forget_split: str) -> dict[str, str]:
    """The TOFU config evaluated for each split, e.g. forget05 -> forget05_perturbed, holdout05, retain_perturbed..."""
    if forget_split not in FORGET_SPLITS:
        raise ValueError(f"Unknown forget split {forget_split!r}; use one of {', '.join(FORGET_SPLITS)}.")
    percent = forget_split[len("forget") :]
    return {
        "forget": f"{forget_split}_perturbed",
        "holdout": f"holdout{percent}",
        "retain": "retain_perturbed",
        "real_authors": "real_authors_perturbed",
        "world_facts": "world_facts_perturbed",
    }


class SplitKind(NamedTuple):
    """What a split is scored for."""

    correct: str | None  # the "correct" answer of the truth ratio
    generated: bool  # greedy generation for ROUGE
    aggregation: str | None  # truth-ratio aggregation


SPLIT_KINDS = {
    "forget": SplitKind("paraphrased_answer", True, "closer_to_1"),
    "holdout": SplitKind(None, False, None),
    "retain": SplitKind("paraphrased_answer", True, "true_better"),
    "real_authors": SplitKind("answer", True, "true_better"),
    "world_facts": SplitKind("answer", True, "true_better"),
}


def _validate_rows(rows: list[dict[str, Any]], split: str, config: str) -> None:
    if not rows:
        raise ValueError(f"The {split} split ({config}) is empty.")
    kind = SPLIT_KINDS[split]
    required = list(
        dict.fromkeys(["question", "answer"] + ([kind.correct, "perturbed_answer"] if kind.aggregation else []))
    )
    missing = [column for column in required if column not in rows[0]]
    if missing:
        raise ValueError(f"The {split} split ({config}) lacks column(s) {missing}; it has {sorted(rows[0])}.")
    for index, row in enumerate(rows):
        for column in required:
            value = row.get(column)
            if column == "perturbed_answer":
                if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
                    raise ValueError(f"{config} row {index}: perturbed_answer must be a non-empty list of strings.")
            elif not isinstance(value, str) or not value.strip():
                raise ValueError(f"{config} row {index}: {column!r} must be a non-empty string.")


def load_eval_rows(
    forget_split: str,
    data_dir: str | os.PathLike | None,
    item_limit: Callable[[str], int | None] = lambda split: None,
) -> dict[str, list[dict[str, Any]]]:
    """The rows of every split of `forget_split`'s evaluation, checked and cut to `item_limit(split)` (e.g.
    `TofuEvalArguments.item_limit`)."""
    rows = {}
    for split, config in tofu_split_configs(forget_split).items():
        split_rows = load_tofu(config, data_dir).to_list()
        _validate_rows(split_rows, split, config)
        limit = item_limit(split)
        rows[split] = split_rows[:limit] if limit else split_rows
    check_holdout(rows, forget_split)
    return rows


def check_holdout(rows: dict[str, list[dict[str, Any]]], forget_split: str = "the forget split") -> None:
    """The holdout split must be questions the model never saw in the forget set: the MIAs score forget against
    holdout, so a holdout that repeats forget questions pulls every AUC towards 0.5 and privleak towards 0, silently.

    Raises:
        ValueError: how many holdout questions are forget questions."""
    forget = {row["question"] for row in rows["forget"]}
    shared = sum(row["question"] in forget for row in rows["holdout"])
    if shared:
        configs = tofu_split_configs(forget_split) if forget_split in FORGET_SPLITS else {}
        holdout, source = configs.get("holdout", "holdout"), configs.get("forget", "forget")
        raise ValueError(
            f"The holdout split ({holdout}) repeats {shared} of its {len(rows['holdout'])} questions from the forget "
            f"split ({source}): the MIAs would compare forget questions with themselves (AUC towards 0.5, privleak "
            "towards 0). Give the holdout split questions the model was not trained on."
        )
