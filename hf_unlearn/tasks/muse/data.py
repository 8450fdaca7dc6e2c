"""MUSE's data: from the Hub (`muse-bench/MUSE-News`, `muse-bench/MUSE-Books`) or a local folder in the layout the
MUSE authors' download script writes, one JSON file per (config, split):

    raw/{forget,retain1,retain2,holdout}.json      lists of documents (strings)
    verbmem/forget.json                            [{"prompt": ..., "gt": ...}]
    knowmem/{forget,retain}_qa.json                [{"question": ..., "answer": ...}]
    knowmem/{forget,retain}_qa_icl.json            the in-context pairs, same form
    privleak/{forget,retain,holdout}.json          lists of texts
    scal/forget_{1..4}.json, sust/forget_{1..4}.json   (MUSE-News) the scalability and sustainability forget sets

A `.jsonl` file of rows with a `text` column works in place of a list of strings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["HUB_IDS", "TextSelection", "describe_text_selections", "load_muse", "muse_eval_data", "select_texts"]

HUB_IDS = {"news": "muse-bench/MUSE-News", "books": "muse-bench/MUSE-Books"}
# The configs and splits a run may read (config/split).
RAW_SPLITS = ("raw/forget", "raw/retain1", "raw/retain2", "raw/holdout")
FOLD_SPLITS = tuple(f"{protocol}/forget_{k}" for protocol in ("scal", "sust") for k in range(1, 5))
# The privleak texts as training documents: a stand-in where a copy lacks raw/retain1 (privleak/retain are retain-set
# texts; PrivLeak itself compares forget with holdout, so training on privleak/retain leaves it a fair test).
PRIVLEAK_SPLITS = ("privleak/forget", "privleak/retain", "privleak/holdout")


@dataclass(frozen=True)
class TextSelection:
    """Documents of one MUSE split (`raw/forget`, `raw/retain1`, `scal/forget_2`, ...; a bare name means
    `raw/NAME`) or of a local `file` (JSON list of strings, or JSON(L) rows with a `text` column: e.g. the WMDP
    corpora), optionally rows [start, end) only."""

    split: str | None = field(default=None, metadata={"help": "config/split, e.g. raw/forget (bare: raw/NAME)."})
    file: str | None = field(default=None, metadata={"help": "A local .json/.jsonl file of texts instead."})
    rows: list[int] | None = field(default=None, metadata={"help": "[start, end) of the documents (null: all)."})

    def __post_init__(self) -> None:
        if (self.split is None) == (self.file is None):
            raise ValueError("give either split (a MUSE split) or file (a local .json/.jsonl of texts).")
        if self.split is not None and "/" not in self.split:
            object.__setattr__(self, "split", f"raw/{self.split}")
        if self.split is not None and self.split not in RAW_SPLITS + FOLD_SPLITS + PRIVLEAK_SPLITS:
            splits = list(RAW_SPLITS + FOLD_SPLITS + PRIVLEAK_SPLITS)
            raise ValueError(f"split must be one of {splits}, got {self.split!r}.")
        if self.rows is not None:
            if len(self.rows) != 2 or not 0 <= self.rows[0] < self.rows[1]:
                raise ValueError(f"rows must be [start, end) with 0 <= start < end, got {self.rows}.")
            object.__setattr__(self, "rows", tuple(self.rows))

    def describe(self) -> str:
        name = self.split if self.split is not None else Path(self.file).name
        return name + (f"[{self.rows[0]}:{self.rows[1]}]" if self.rows else "")


def describe_text_selections(selections: list[TextSelection]) -> str:
    return " + ".join(selection.describe() for selection in selections)


@cache
def load_muse(corpus: str, config: str, split: str, data_dir: str | None = None) -> tuple[Any, ...]:
    """One split's rows (strings for raw/privleak/scal/sust, dicts otherwise), from `data_dir` or the Hub."""
    if data_dir is not None:
        folder = Path(data_dir) / config
        for suffix in (".json", ".jsonl"):
            path = folder / f"{split}{suffix}"
            if path.is_file():
                return tuple(_read(path))
        raise FileNotFoundError(f"MUSE data: no {config}/{split}.json(l) in {data_dir}.")
    from datasets import load_dataset

    rows = load_dataset(HUB_IDS[corpus], config, split=split)
    if "text" in rows.column_names and config in ("raw", "privleak", "scal", "sust"):
        return tuple(rows["text"])
    return tuple(rows.to_list())


def _read(path: Path) -> list[Any]:
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"MUSE data: {path} is not a non-empty list.")
    return [row["text"] if isinstance(row, dict) and set(row) == {"text"} else row for row in rows]


def select_texts(selections: list[TextSelection], corpus: str, data_dir: str | None) -> list[str]:
    """The documents of `selections`, in order."""
    texts: list[str] = []
    for selection in selections:
        if selection.file is not None:
            rows = tuple(_read(Path(selection.file)))
            if not all(isinstance(row, str) for row in rows):
                raise ValueError(f"{selection.file}: expected texts (strings or rows with only a `text` column).")
        else:
            config, split = selection.split.split("/")
            rows = load_muse(corpus, config, split, data_dir)
        start, end = selection.rows or (0, len(rows))
        if end > len(rows):
            raise ValueError(f"{selection.describe()}: the split has only {len(rows)} documents.")
        texts.extend(rows[start:end])
    return texts


def muse_eval_data(corpus: str, data_dir: str | None, metrics: list[str]) -> dict[str, list[Any]]:
    """What `evaluate_muse` reads for `metrics` (MUSE-Books has no KnowMem QA on some revisions: asked for, it fails
    here with the missing file named)."""
    data: dict[str, list[Any]] = {}
    if "verbmem_f" in metrics:
        data["verbmem"] = list(load_muse(corpus, "verbmem", "forget", data_dir))
    for split, metric in (("forget", "knowmem_f"), ("retain", "knowmem_r")):
        if metric in metrics:
            data[f"knowmem_{split}"] = list(load_muse(corpus, "knowmem", f"{split}_qa", data_dir))
            data[f"knowmem_{split}_icl"] = list(load_muse(corpus, "knowmem", f"{split}_qa_icl", data_dir))
    if "privleak" in metrics:
        for split in ("forget", "holdout"):
            data[f"privleak_{split}"] = list(load_muse(corpus, "privleak", split, data_dir))
    return data
