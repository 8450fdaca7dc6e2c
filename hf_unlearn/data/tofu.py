"""TOFU data (Maini et al., 2024, arXiv:2401.06121): its configs, loaded from the Hub or a local folder, and the
reference's chat formatting (one setting for fine-tuning, unlearning and evaluation alike).

>>> forget = load_tofu("forget05", data_dir="path/to/tofu")  # doctest: +SKIP
>>> TofuFormat().chat_format().kwargs()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chat import LABEL_CONVENTIONS, ChatFormat

__all__ = ["FORGET_SPLITS", "TOFU_CONFIGS", "TOFU_HUB_ID", "TofuFormat", "load_tofu"]

TOFU_HUB_ID = "locuslab/TOFU"
TOFU_CONFIGS = (
    "full",
    "forget01",
    "forget05",
    "forget10",
    "retain90",
    "retain95",
    "retain99",
    "forget01_perturbed",
    "forget05_perturbed",
    "forget10_perturbed",
    "retain_perturbed",
    "real_authors",
    "real_authors_perturbed",
    "world_facts",
    "world_facts_perturbed",
    "holdout01",
    "holdout05",
    "holdout10",
)
FORGET_SPLITS = ("forget01", "forget05", "forget10")


@dataclass
class TofuFormat:
    """The reference's TOFU formatting (Llama-3.2-Instruct): the chat template with a system prompt and Llama 3's
    `date_string`; one setting for fine-tuning, unlearning and evaluation alike (`docs/metrics.md#formatting`).

    Parameters:
        system_prompt (`str` or `None`, defaults to `"You are a helpful assistant."`):
            The system turn; None (CLI: an empty string) for none.
        date_string (`str`, defaults to `"10 Apr 2025"`):
            The chat template's `date_string`, passed only to templates that mention it.
        use_chat_template (`bool` or `None`, defaults to `None`):
            None: the chat template when the tokenizer has one, else plain "Question: ... Answer:" text (reported).
        reference_attention_mask (`bool`, defaults to `False`):
            Reference parity: attention mask = `input_ids != pad` (hides end-of-turn tokens when pad = eos).
        label_convention (`str`, defaults to `"end_of_turn"`):
            Which tokens are the answer's targets: `"end_of_turn"` (the answer and the template's end-of-turn token)
            or `"reference"` (the reference evaluator's tokenization: the rendered conversation with eos appended;
            `docs/metrics.md#label-convention`). Evaluation and unlearning use it; fine-tuning always trains on
            `"end_of_turn"` labels, so one cached fine-tune serves both conventions.
    """

    system_prompt: str | None = field(default="You are a helpful assistant.", metadata={"help": "System prompt."})
    date_string: str = field(default="10 Apr 2025", metadata={"help": "Chat-template date_string (Llama 3)."})
    use_chat_template: bool | None = field(
        default=None, metadata={"help": "None: the chat template if the tokenizer has one; False: plain text."}
    )
    reference_attention_mask: bool = field(
        default=False, metadata={"help": "Reference parity: attention mask = input_ids != pad."}
    )
    label_convention: str = field(
        default="end_of_turn",
        metadata={
            "help": "Answer targets: 'end_of_turn' (answer + end-of-turn token) or 'reference'.",
            "choices": ["end_of_turn", "reference"],
        },
    )

    def __post_init__(self) -> None:
        if self.system_prompt == "":  # the CLI's way of saying "no system turn"
            self.system_prompt = None
        if self.label_convention not in LABEL_CONVENTIONS:
            raise ValueError(f"label_convention={self.label_convention!r} is not 'end_of_turn' or 'reference'.")

    def chat_format(self) -> ChatFormat:
        return ChatFormat(
            system_prompt=self.system_prompt,
            template_kwargs={"date_string": self.date_string},
            use_chat_template=self.use_chat_template,
            reference_attention_mask=self.reference_attention_mask,
            label_convention=self.label_convention,
        )

    def formatting(self) -> dict[str, Any]:
        """The formatting fields alone (a `TofuEvalArguments` has others too), for fingerprints and results."""
        return {name: getattr(self, name) for name in TofuFormat.__dataclass_fields__}


def load_tofu(name: str, data_dir: str | os.PathLike | None = None):
    """One TOFU config as a `datasets.Dataset`.

    Args:
        name: a config name (`"forget05"`, `"retain_perturbed"`, ... see `TOFU_CONFIGS`).
        data_dir: a local folder with one `<name>.jsonl` (or `.json`) file per config, as in the TOFU README; None
            loads `load_dataset("locuslab/TOFU", name)` from the Hub.

    Raises:
        FileNotFoundError: the config has no file in `data_dir` (the message lists the configs found there).
        ValueError: an unknown config name (Hub), or a file without rows.
    """
    from datasets import Dataset

    if data_dir is None:
        if name not in TOFU_CONFIGS:
            raise ValueError(f"Unknown TOFU config {name!r}; known configs: {', '.join(TOFU_CONFIGS)}.")
        return _load_from_hub(name)
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"TOFU data folder {str(folder)!r} does not exist.")
    for suffix in (".jsonl", ".json"):
        path = folder / f"{name}{suffix}"
        if path.is_file():
            rows = _read_json_rows(path)
            if not rows:
                raise ValueError(f"TOFU config {name!r} ({path}) is empty: no rows.")
            return Dataset.from_list(rows)
    found = sorted({p.stem for p in folder.iterdir() if p.suffix in (".json", ".jsonl")})
    raise FileNotFoundError(f"TOFU config {name!r} not found in {str(folder)!r} (configs there: {found or 'none'}).")


def _load_from_hub(name: str):
    """`load_dataset("locuslab/TOFU", name)`; offline or unreachable, one line saying to pass a local folder."""
    from datasets import load_dataset

    from ..models import is_hub_offline

    try:
        return load_dataset(TOFU_HUB_ID, name, split="train")
    except OSError as error:  # ConnectionError (offline, no network), DatasetNotFoundError, a broken cache
        why = "HF_HUB_OFFLINE is set" if is_hub_offline() else str(error).strip().splitlines()[0]
        raise FileNotFoundError(
            f"TOFU config {name!r} could not be loaded from the Hub ({TOFU_HUB_ID}; {why}): pass a local TOFU folder "
            "instead (--data-dir DIR, or data_dir in the recipe), one <config>.jsonl per config."
        ) from error


def _read_json_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON array or a JSON Lines file; a broken line is reported with its line number in the file."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):  # one JSON array
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
    else:
        rows = []
        # Lines end at "\n" only: str.splitlines() would also split at U+2028 and other separators that JSON strings
        # may hold unescaped, breaking rows apart and shifting the line numbers reported.
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg}).") from None
    bad = next((i for i, row in enumerate(rows) if not isinstance(row, dict)), None)
    if bad is not None:
        raise ValueError(f"{path}: row {bad + 1} is a {type(rows[bad]).__name__}, not a JSON object.")
    return rows
