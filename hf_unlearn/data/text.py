"""Plain-text rows (a `text` column, TRL's language-modeling format) as fixed-length chunks for causal-LM training.

Raw documents (news articles, books) have no question or answer: every token is a target. As MUSE trains and
unlearns, the documents are joined with a blank line, tokenized once without special tokens, cut into pieces of
`max_length - 1` tokens and each piece starts with the tokenizer's BOS token (when it has one); the last piece is
filled up with the first tokens again, so every chunk has exactly `max_length` tokens and no padding.

    >>> chunks = chunk_text_dataset(Dataset.from_dict({"text": ["One article.", "Another."]}), tokenizer, 512)
    >>> chunks.column_names
    ['input_ids', 'labels', 'attention_mask']
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset

__all__ = ["DEFAULT_TEXT_LENGTH", "chunk_text_dataset", "chunk_token_ids", "is_text_dataset"]

# Used when neither the caller nor the tokenizer gives a usable length (tokenizers without a limit say 1e30).
DEFAULT_TEXT_LENGTH = 1024


def is_text_dataset(columns: list[str] | None) -> bool:
    """Rows of plain text only: a `text` column and none of the question/answer, prompt/completion, messages ones."""
    others = {"question", "answer", "prompt", "completion", "messages", "input_ids"}
    return columns is not None and "text" in columns and not others & set(columns)


def chunk_token_ids(tokens: list[int], max_length: int, bos_token_id: int | None) -> list[list[int]]:
    """`tokens` cut into chunks of exactly `max_length` (BOS first when `bos_token_id` is given); the last chunk is
    completed with the first tokens (wrapping around as often as a short text needs)."""
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}.")
    if not tokens:
        raise ValueError("No tokens to chunk: the text is empty.")
    body = max_length - (bos_token_id is not None)
    head = [] if bos_token_id is None else [bos_token_id]
    pieces = [tokens[start : start + body] for start in range(0, len(tokens), body)]
    if len(pieces[-1]) < body:  # wrap around: the rest of the last chunk is the start of the text again
        filler = (tokens * (body // len(tokens) + 1))[: body - len(pieces[-1])]
        pieces[-1] = pieces[-1] + filler
    return [head + piece for piece in pieces]


def chunk_text_dataset(
    dataset: Dataset | list[str],
    tokenizer: Any,
    max_length: int | None = None,
    *,
    text_key: str = "text",
    separator: str = "\n\n",
    add_bos: bool = True,
) -> Dataset:
    """Chunks of `max_length` tokens (default: the tokenizer's `model_max_length`, else `DEFAULT_TEXT_LENGTH`) of
    the texts joined by `separator`, as `input_ids` / `labels` (every token a target) / `attention_mask`."""
    texts = list(dataset) if isinstance(dataset, list) else list(dataset[text_key])
    if not texts or not all(isinstance(text, str) for text in texts):
        raise ValueError(f"Plain-text rows need a non-empty {text_key!r} column of strings.")
    if max_length is None:
        limit = getattr(tokenizer, "model_max_length", None)
        max_length = limit if isinstance(limit, int) and limit < 1_000_000 else DEFAULT_TEXT_LENGTH
    tokens = list(tokenizer(separator.join(texts), add_special_tokens=False)["input_ids"])
    bos = getattr(tokenizer, "bos_token_id", None) if add_bos else None
    chunks = chunk_token_ids(tokens, max_length, bos)
    return Dataset.from_dict({"input_ids": chunks, "labels": chunks, "attention_mask": [[1] * len(c) for c in chunks]})
