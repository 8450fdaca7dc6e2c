"""The retain model's reference values (forget quality's truth ratios, privleak's AUC), read from a retain-model
evaluation on disk: an `hf-unlearn eval` output folder or an open-unlearning `TOFU_EVAL.json`."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ...utils import sha256_json

__all__ = ["ITEMS_FILE", "SUMMARY_FILE", "RetainReference", "load_retain_reference", "select_retain_items"]

# The files of an evaluation folder (`hf-unlearn eval --output-dir`, a pipeline's eval/ stages).
SUMMARY_FILE = "summary.json"
ITEMS_FILE = "items.json"


@dataclass(frozen=True)
class RetainReference:
    """What the retain model's evaluation provides: per-item forget truth ratios (for forget_quality) and its min-k
    AUC (for privleak), plus where they came from."""

    truth_ratios: list[float] | None
    mia_auc: float | None
    source: str
    sha256: str
    # The forget questions the truth ratios belong to, in order (None: not recorded, as in open-unlearning's file).
    forget_questions: tuple[str, ...] | None = None


def load_retain_reference(path: str | os.PathLike, forget_split: str) -> RetainReference:
    """Read a retain-model evaluation: an `hf-unlearn eval` output folder (or its summary.json / items.json), or an
    open-unlearning `TOFU_EVAL.json` (keys `forget_truth_ratio.value_by_index.*.score`, `mia_min_k.agg_value`).

    Raises ValueError if the file holds neither value or was computed for another forget split.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / SUMMARY_FILE
    if path.name == ITEMS_FILE:
        path = path.with_name(SUMMARY_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"Retain-model results {str(path)!r} not found.")
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"Retain-model results {str(path)!r} are not valid JSON: {error}") from error
    if "settings" in payload and "num_items" in payload:  # our own summary.json
        split = payload["settings"].get("forget_split")
        if split != forget_split:
            raise ValueError(f"Retain-model results {str(path)!r} are for {split!r}, not {forget_split!r}.")
        items_path = path.with_name(ITEMS_FILE)
        truth_ratios, questions = None, None
        if items_path.is_file():
            items = json.loads(items_path.read_text())["splits"]
            truth_ratios = [item["truth_ratio"] for item in items["forget"]]
            if all("question" in item for item in items["forget"]):
                questions = tuple(item["question"] for item in items["forget"])
        auc = payload.get("mia_min_k")
        source = f"hf-unlearn results {path}"
        return RetainReference(truth_ratios, auc, source, _reference_sha256(truth_ratios, auc), questions)

    if "forget_truth_ratio" in payload or "mia_min_k" in payload:  # open-unlearning TOFU_EVAL.json
        truth_ratios = None
        by_index = (payload.get("forget_truth_ratio") or {}).get("value_by_index")
        if by_index:
            ordered = sorted(by_index.items(), key=lambda kv: int(kv[0]))
            truth_ratios = [float(value["score"]) for _, value in ordered if value.get("score") is not None]
        auc = (payload.get("mia_min_k") or {}).get("agg_value")
        if truth_ratios is None and auc is None:
            raise ValueError(f"{str(path)!r} has neither forget_truth_ratio.value_by_index nor mia_min_k.agg_value.")
        auc = None if auc is None else float(auc)
        return RetainReference(
            truth_ratios, auc, f"open-unlearning results {path}", _reference_sha256(truth_ratios, auc)
        )

    raise ValueError(
        f"{str(path)!r} is not a retain-model evaluation (expected an hf-unlearn summary.json or an open-unlearning "
        "TOFU_EVAL.json)."
    )


def select_retain_items(reference: RetainReference, forget_rows: list[dict]) -> RetainReference:
    """The retain model's truth ratios of exactly the forget items evaluated now, in their order: forget_quality is a
    KS test between the two lists, and other items make it meaningless (before this check: 1.0 from two lists of
    unrelated items). With the questions recorded (an hf-unlearn evaluation) the items are matched by question, so a
    subset (a trajectory's first items) reads its own values; without (open-unlearning's file, by TOFU index) the
    first ones are taken.

    Raises:
        ValueError: forget items the reference does not have (how many)."""
    if reference.truth_ratios is None:
        return reference
    want = len(forget_rows)
    if reference.forget_questions is not None:
        position = {}
        for index, question in enumerate(reference.forget_questions):
            position.setdefault(question, index)
        missing = sum(row["question"] not in position for row in forget_rows)
        if missing:
            raise ValueError(
                f"The retain-model results ({reference.source}) were computed on other forget items: {missing} of "
                f"the {want} questions evaluated now are not among its {len(reference.forget_questions)}. Evaluate "
                "the retain model on the same data (--data-dir) and at least the same items."
            )
        order = [position[row["question"]] for row in forget_rows]
        return dataclasses.replace(
            reference,
            truth_ratios=[reference.truth_ratios[i] for i in order],
            forget_questions=tuple(row["question"] for row in forget_rows),
        )
    have = len(reference.truth_ratios)
    if have < want:
        raise ValueError(
            f"The retain-model results ({reference.source}) hold truth ratios of {have} forget item(s), this "
            f"evaluation has {want}: evaluate the retain model on at least the same items (max_items / "
            "max_forget_items)."
        )
    return dataclasses.replace(reference, truth_ratios=list(reference.truth_ratios[:want]))


def _reference_sha256(truth_ratios: list[float] | None, auc: float | None) -> str:
    """The reference's identity: the values the metrics read from it, not the bytes of its file (a re-run of the
    retain evaluation with other timings or another path is the same reference)."""
    return sha256_json({"truth_ratios": truth_ratios, "mia_auc": auc})
