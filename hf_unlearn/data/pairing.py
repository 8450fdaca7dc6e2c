"""Forget/retain pairing and padding for unlearning trainers.

Reference behaviour (`docs/methods.md#batches`): each forget example is paired with one uniformly random retain example, so both halves
of a micro-batch have the same size. Here the draw is a pure function of `(seed, epoch, index)`, so a run is
reproducible and a resumed run sees the same pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils import IGNORE_INDEX

__all__ = [
    "ForgetRetainDataset",
    "ForgetThenRetainDataset",
    "UnlearnCollator",
    "check_token_rows",
    "count_shared_rows",
    "pad_examples",
    "validate_lm_dataset",
]

REQUIRED_COLUMNS = ("input_ids", "labels")


def validate_lm_dataset(dataset: Any, name: str) -> None:
    """Fail early, naming the problem, on a dataset the trainers cannot use."""
    if dataset is None:
        raise ValueError(f"The {name} dataset is None.")
    if len(dataset) == 0:
        raise ValueError(f"The {name} dataset is empty: unlearning needs at least one example.")
    columns = getattr(dataset, "column_names", None)
    if columns is None:
        columns = list(dataset[0].keys())
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        raise ValueError(
            f"The {name} dataset is missing column(s) {missing} (it has {list(columns)}). Give question/answer, "
            "'messages' or TRL prompt/completion rows (the trainer tokenizes them), or tokenize it into `input_ids` "
            "and `labels` (-100 on tokens that are not targets), e.g. with `hf_unlearn.data.tokenize_dataset`."
        )
    labels = _column(dataset, "labels")
    lengths = [(len(ids), len(row)) for ids, row in zip(_column(dataset, "input_ids"), labels)]
    mismatched = [i for i, (n_ids, n_labels) in enumerate(lengths) if n_ids != n_labels]
    if mismatched:
        i = mismatched[0]
        raise ValueError(
            f"{len(mismatched)} example(s) of the {name} dataset have labels of another length than input_ids, e.g. "
            f"index {i} ({lengths[i][1]} labels for {lengths[i][0]} tokens): labels must align with input_ids."
        )
    # The causal shift drops position 0, so a target must sit at position >= 1.
    empty = [i for i, row in enumerate(labels) if not any(label != IGNORE_INDEX for label in list(row)[1:])]
    if empty:
        raise ValueError(
            f"{len(empty)} example(s) of the {name} dataset have no target token (all labels are -100 after the "
            f"causal shift), e.g. index {empty[0]}: their loss is undefined. Drop them or fix the labels."
        )


def check_token_rows(dataset: Any, name: str, vocab_size: int | None, max_positions: int | None) -> None:
    """Fail early on rows the model cannot embed: a token id outside the vocabulary, or more tokens than its context
    (torch would answer with an IndexError from inside the embedding)."""
    rows = _column(dataset, "input_ids")
    if vocab_size is not None:
        bad = [i for i, ids in enumerate(rows) if len(ids) and (min(ids) < 0 or max(ids) >= vocab_size)]
        if bad:
            ids = list(rows[bad[0]])
            raise ValueError(
                f"{len(bad)} example(s) of the {name} dataset have token ids outside the model's vocabulary "
                f"(0..{vocab_size - 1}), e.g. index {bad[0]} (ids {min(ids)}..{max(ids)}): tokenize with the model's "
                "own tokenizer."
            )
        try:
            labels = _column(dataset, "labels")
        except KeyError:  # labels made by the collator from input_ids
            labels = []
        if labels:
            targets = [[t for t in row if t != IGNORE_INDEX] for row in labels]
            bad = [i for i, row in enumerate(targets) if row and (min(row) < 0 or max(row) >= vocab_size)]
            if bad:
                row = targets[bad[0]]
                raise ValueError(
                    f"{len(bad)} example(s) of the {name} dataset have labels outside the model's vocabulary "
                    f"(0..{vocab_size - 1}, or {IGNORE_INDEX} for no target), e.g. index {bad[0]} (labels "
                    f"{min(row)}..{max(row)}): the loss would fail inside cross-entropy."
                )
    if max_positions is not None:
        long = [i for i, ids in enumerate(rows) if len(ids) > max_positions]
        if long:
            longest = max(len(rows[i]) for i in long)
            raise ValueError(
                f"{len(long)} example(s) of the {name} dataset are longer than the model's context of "
                f"{max_positions} tokens (the longest has {longest}): truncate them when tokenizing or use a model "
                "with a longer context."
            )


def count_shared_rows(forget: Any, retain: Any) -> int:
    """How many forget examples also appear, token for token, in the retain set (unlearning and keeping the same
    row pull against each other)."""
    retain_rows = {tuple(ids) for ids in _column(retain, "input_ids")}
    return sum(tuple(ids) in retain_rows for ids in _column(forget, "input_ids"))


def _column(dataset: Any, name: str) -> list:
    return dataset[name] if hasattr(dataset, "column_names") else [example[name] for example in dataset]


class ForgetRetainDataset(Dataset):
    """Iterates over the forget set; each item carries its forget index and, if given, a paired retain example.

    `indices` restricts the iteration to a subset of the forget set (IMU draws only samples with positive weight);
    the `index` of each item stays its position in the full forget set.
    """

    def __init__(self, forget: Any, retain: Any | None = None, seed: int = 0, indices: Sequence[int] | None = None):
        self.forget = forget
        self.retain = retain
        self.seed = seed
        self.epoch = 0
        self.indices = list(range(len(forget))) if indices is None else list(indices)

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh retain pairing each epoch (called by the trainer's epoch callback)."""
        self.epoch = epoch

    def retain_index(self, index: int) -> int:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return int(rng.integers(len(self.retain)))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict[str, Any]:
        index = self.indices[position]
        item = {"forget": self.forget[index], "index": index}
        if self.retain is not None:
            item["retain"] = self.retain[self.retain_index(index)]
        return item


class ForgetThenRetainDataset(Dataset):
    """Every forget example, then every retain example, each once (one full pass over Df ∪ Dr, as IAU's update needs):
    items are `{"forget": example, "index": i}` or `{"retain": example}`."""

    def __init__(self, forget: Any, retain: Any):
        self.forget, self.retain = forget, retain

    def __len__(self) -> int:
        return len(self.forget) + len(self.retain)

    def __getitem__(self, position: int) -> dict[str, Any]:
        if position < len(self.forget):
            return {"forget": self.forget[position], "index": position}
        return {"retain": self.retain[position - len(self.forget)]}


def pad_examples(examples: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad `input_ids` (with `pad_token_id`), `labels` (with -100) and `attention_mask` (with 0).

    The same ids as TRL's `pad` (`trl.trainer.utils`; tested), written here because that module imports
    `transformers.trainer` and TRL's trainers: seconds of start-up for the evaluation, which pads without them."""
    length = max(len(example["input_ids"]) for example in examples)
    batch = {
        "input_ids": torch.full((len(examples), length), pad_token_id, dtype=torch.long),
        "labels": torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long),
        "attention_mask": torch.zeros((len(examples), length), dtype=torch.long),
    }
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        batch["input_ids"][row, :n] = torch.as_tensor(example["input_ids"])
        batch["labels"][row, :n] = torch.as_tensor(example["labels"])
        mask = example.get("attention_mask")
        batch["attention_mask"][row, :n] = 1 if mask is None else torch.as_tensor(mask)
    return batch


class UnlearnCollator:
    """Collates unlearning items into `{"forget": batch, "index": (B_f,), "retain": batch}` (a half is left out when
    no item has it: a `ForgetThenRetainDataset` micro-batch may hold one set only), and plain tokenized rows
    (evaluation datasets) into one padded batch."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if not any("forget" in item or "retain" in item for item in items):
            return pad_examples(items, self.pad_token_id)
        batch: dict[str, Any] = {}
        forget = [item for item in items if "forget" in item]
        if forget:
            batch["forget"] = pad_examples([item["forget"] for item in forget], self.pad_token_id)
            batch["index"] = torch.tensor([item["index"] for item in forget], dtype=torch.long)
        retain = [item["retain"] for item in items if "retain" in item]
        if retain:
            batch["retain"] = pad_examples(retain, self.pad_token_id)
        return batch
