"""Refusal ("I don't know") answers to the forget questions, for IdkNLL and IdkDPO (`docs/methods.md#idknll`).

An idk row is a forget row whose answer is replaced by a refusal: the forget row's tokens before its first target
(the prompt, chat template included) followed by the refusal's answer tokens, labelled. The refusal is drawn per
`(seed, epoch, index)`, so a run is reproducible, a resumed run sees the same rows, and pairings change every epoch.

The refusals are text (the 100 shipped in `idk_answers.txt`, or the user's own), tokenized once each as the answer of
a chat turn with the forget set's chat format, so they end with the template's end-of-turn token like every answer.
Rows given already tokenized without a tokenizer (the Markov task has no text) use `idk_token_ids` instead: one fixed
token sequence that replaces every row's labelled part.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import IGNORE_INDEX
from .chat import ChatFormat, encode_prompt_answer
from .pairing import ForgetRetainDataset, UnlearnCollator, pad_examples

__all__ = [
    "IDK_ANSWERS_FILE",
    "IdkCollator",
    "IdkDataset",
    "idk_answer_ids",
    "idk_row",
    "idk_sequences",
    "idk_sequences_of",
    "load_idk_answers",
]

IDK_ANSWERS_FILE = Path(__file__).with_name("idk_answers.txt")


def load_idk_answers(source: Sequence[str] | str | None = None) -> list[str]:
    """The refusals: the shipped list (None), the lines of a text file (a path), or the strings given; empty lines
    are skipped."""
    if source is None or isinstance(source, (str, Path)):
        path = IDK_ANSWERS_FILE if source is None else Path(source)
        if not path.is_file():
            raise ValueError(f"idk_answers={str(source)!r} is not a file (a path to refusals, one per line).")
        answers = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    else:
        if not all(isinstance(answer, str) for answer in source):
            raise ValueError("idk_answers must be a list of strings or a path to a text file.")
        answers = [answer.strip() for answer in source]
    answers = [answer for answer in answers if answer]
    if not answers:
        raise ValueError(f"idk_answers={source!r} holds no refusal (every line is empty).")
    return answers


def idk_answer_ids(tokenizer: Any, answers: Sequence[str], dataset_kwargs: dict[str, Any] | None = None) -> list:
    """Each refusal's answer tokens under the chat format of `dataset_kwargs` (the trainer's `dataset_kwargs`; the
    fields of `ChatFormat` are used): the tokens that follow the generation prompt, end-of-turn token included. The
    prompt ends with the template's assistant header, so these tokens do not depend on the question."""
    names = {item.name for item in dataclasses.fields(ChatFormat)}
    chat_format = {key: value for key, value in (dataset_kwargs or {}).items() if key in names}
    return [encode_prompt_answer(tokenizer, "Question?", answer, **chat_format)[1] for answer in answers]


def idk_sequences(
    idk_answers: Sequence[str] | str | None,
    idk_token_ids: Sequence[int] | None,
    tokenizer: Any | None,
    dataset_kwargs: dict[str, Any] | None = None,
    vocab_size: int | None = None,
) -> list[list[int]]:
    """The answer tokens of every refusal a trainer draws from: `[idk_token_ids]` when given, else the refusals
    `idk_answers` (see `load_idk_answers`) tokenized with `tokenizer` (`idk_answer_ids`)."""
    if idk_token_ids is not None:
        ids = [int(token) for token in idk_token_ids]
        if vocab_size is not None and not all(0 <= token < vocab_size for token in ids):
            raise ValueError(f"idk_token_ids={ids} has ids outside the model's vocabulary (0..{vocab_size - 1}).")
        return [ids]
    if tokenizer is None:
        raise ValueError(
            "The idk answers are text and there is no tokenizer: pass processing_class=<tokenizer>, or give "
            "idk_token_ids (the token ids of one refusal) for already-tokenized rows."
        )
    return idk_answer_ids(tokenizer, load_idk_answers(idk_answers), dataset_kwargs)


def idk_sequences_of(args: Any, tokenizer: Any | None, model: Any) -> list[list[int]]:
    """`idk_sequences` for a method config (its `idk_answers`, `idk_token_ids`, `dataset_kwargs`) and a model (its
    input vocabulary bounds `idk_token_ids`)."""
    vocab_size = getattr(model.get_input_embeddings(), "num_embeddings", None)
    return idk_sequences(args.idk_answers, args.idk_token_ids, tokenizer, args.dataset_kwargs, vocab_size)


def idk_row(example: dict[str, Any], answer_ids: Sequence[int]) -> dict[str, list[int]]:
    """`example` with its answer replaced: its tokens before the first target (position >= 1: the causal shift makes
    position 0 a prompt token in any case), then `answer_ids`, labelled."""
    labels = list(example["labels"])
    start = next(t for t in range(1, len(labels)) if labels[t] != IGNORE_INDEX)  # rows are validated non-empty
    prompt = list(example["input_ids"][:start])
    mask = example.get("attention_mask")
    prompt_mask = [1] * start if mask is None else list(mask[:start])
    return {
        "input_ids": prompt + list(answer_ids),
        "labels": [IGNORE_INDEX] * start + list(answer_ids),
        "attention_mask": prompt_mask + [1] * len(answer_ids),
    }


class IdkDataset(ForgetRetainDataset):
    """Forget items with an idk row, the refusal drawn per `(seed, epoch, index)`: under `"idk"`, or in place of the
    forget row with `replace_forget=True` (IdkNLL trains on the idk rows only). `answers` (token ids of each refusal)
    is set before training (`UnlearnTrainer.prepare_training`), when the tokenizer is known."""

    def __init__(self, forget: Any, retain: Any | None = None, seed: int = 0, replace_forget: bool = False):
        super().__init__(forget, retain, seed=seed)
        self.replace_forget = replace_forget
        self.answers: list[list[int]] | None = None

    def answer_index(self, index: int) -> int:
        # A stream of its own (the trailing 1), independent of the retain pairing's draw for the same item.
        return int(np.random.default_rng([self.seed, self.epoch, index, 1]).integers(len(self.answers)))

    def __getitem__(self, position: int) -> dict[str, Any]:
        if self.answers is None:
            raise RuntimeError("IdkDataset.answers is not set: the trainer sets it in prepare_training (train()).")
        item = super().__getitem__(position)
        row = idk_row(item["forget"], self.answers[self.answer_index(item["index"])])
        item["forget" if self.replace_forget else "idk"] = row
        return item


class IdkCollator(UnlearnCollator):
    """`UnlearnCollator`, plus the padded idk rows under `"idk"` when the items carry them."""

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().__call__(items)
        idk = [item["idk"] for item in items if "idk" in item]
        if idk:
            batch["idk"] = pad_examples(idk, self.pad_token_id)
        return batch
