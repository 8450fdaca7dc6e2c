"""The one push path. `hf-unlearn run --push-to-hub` (the pipelines), `UnlearnTrainer.push_to_hub()` and a user's own
script all call `publish_model`: write the folder, write its card, refuse it if any file holds forget-set text, then
upload it in one commit or, when the Hub is unavailable, give the one command (`upload_command`) that uploads it
later."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .artifacts import find_texts, prepare_folder
from .card import ModelCardInfo, write_model_card
from .push import HubPush, PushResult, finish_push

__all__ = ["check_forget_text", "forget_texts_of_rows", "publish_model", "write_push_folder"]

_FIELD_LABEL = re.compile(r"^\w+:\s*")  # "Question: ..." in the plain prompt format


def forget_texts_of_rows(
    rows: Iterable[dict[str, Any]], tokenizer: Any, *, not_private: Iterable[str] = ()
) -> list[str]:
    """The text of tokenized forget rows, for the forget-text guard when the raw rows are gone: each row's answer
    (its labelled tokens) and each line of its prompt, decoded without special tokens (so the chat template's
    markers fall away); a line `Question: ...` also without its label. [] without a tokenizer (token-id data).

    Prompt lines that are the formatting's, not the row's, are left out (they are in every pushed tokenizer config
    or card): lines found in the tokenizer's chat template or in `not_private` (e.g. the system prompt), and, with
    several rows, lines every row's prompt has."""
    if tokenizer is None or not hasattr(tokenizer, "decode"):
        return []
    template = getattr(tokenizer, "chat_template", None)
    templates = list(template.values()) if isinstance(template, dict) else [template or ""]
    shared_text = [text for text in (*templates, *not_private) if text]
    answers, prompts = [], []
    for row in rows:
        ids, labels = list(row["input_ids"]), list(row.get("labels") or [])
        labels += [-100] * (len(ids) - len(labels))
        answer = [token for token, label in zip(ids, labels) if label != -100]
        prompt = [token for token, label in zip(ids, labels) if label == -100]
        answers.append(tokenizer.decode(answer, skip_special_tokens=True).strip())
        lines = tokenizer.decode(prompt, skip_special_tokens=True).splitlines()
        prompts.append({piece for line in lines for piece in (line.strip(), _FIELD_LABEL.sub("", line.strip()))})
    in_every_row = set.intersection(*prompts) if len(prompts) > 1 else set()
    questions = [
        piece
        for pieces in prompts
        for piece in sorted(pieces)
        if piece not in in_every_row and not any(piece in text for text in shared_text)
    ]
    return [text for text in dict.fromkeys([*answers, *questions]) if text]


def check_forget_text(folder: str | os.PathLike, forget_texts: Iterable[str]) -> None:
    """Refuse a push folder in which any file (the card included) holds a forget question or answer."""
    leaked = find_texts(folder, forget_texts)
    if leaked:
        raise ValueError(
            f"Refusing to push {folder}: forget-set text found in {', '.join(leaked)} (a model card or pushed file "
            "must never hold forget-set text; remove it from what you passed to the card)."
        )


def write_push_folder(
    push: HubPush,
    write_files: Callable[[Path], Any],
    card: ModelCardInfo,
    *,
    forget_texts: Iterable[str],
    existing_card: str | os.PathLike | None = None,
) -> Path:
    """Write what `push` uploads into `push.folder` (emptied first): the files (`write_files(folder)`: the adapter,
    the head delta or the full model), then the card (for `push.repo_id` and `push.artifact`, keeping the metadata
    of the card the files brought, or of `existing_card`), then check that no file holds forget text."""
    folder = prepare_folder(push.folder)
    write_files(folder)
    card = dataclasses.replace(card, repo_id=push.repo_id, artifact=push.artifact)
    write_model_card(folder, card, existing=existing_card)
    check_forget_text(folder, forget_texts)
    return folder


def publish_model(
    push: HubPush,
    write_files: Callable[[Path], Any],
    card: ModelCardInfo,
    *,
    forget_texts: Iterable[str],
    commit_message: str,
    existing_card: str | os.PathLike | None = None,
    blocking: bool = True,
) -> PushResult:
    """Write the folder of one push (`write_push_folder`: files, card, forget-text guard), then upload it in one
    commit, or, when `push.skip_reason` says the Hub is unavailable, leave it written. Returns the record for
    `results.json`, the line to print (with `upload_command` when not pushed) and the commit.

    Args:
        push: where it goes and what it holds (`HubPush`: repository, artifact, folder, private, token, revision).
        write_files: `folder -> None`, writes the model files into the (empty) folder.
        card: what the model card says (its `repo_id` and `artifact` are taken from `push`).
        forget_texts: the forget questions and answers; a folder holding any of them is refused (ValueError).
            Pass `()` only for data that has no text (token ids).
        commit_message: the commit's message.
        existing_card: a card whose metadata to keep (PEFT's), when the files did not bring it.
        blocking: False returns the upload as a Future (`upload_folder(run_as_future=True)`).
    """
    write_push_folder(push, write_files, card, forget_texts=forget_texts, existing_card=existing_card)
    return finish_push(push, commit_message, blocking=blocking)
