"""TOFU row selections for training: rows `[start, stop)` of named configs, concatenated (the core's `load_tofu`
reads each config).

>>> rows = select_rows([Selection("full", (0, 400)), Selection("forget05")], "path/to/tofu")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ...data.tofu import load_tofu

__all__ = ["Selection", "describe_selections", "select_rows", "selections_json"]


@dataclass(frozen=True)
class Selection:
    """Rows `[start, stop)` of one TOFU config (Python slice semantics; `rows=None`: all of it)."""

    config: str
    rows: tuple[int | None, int | None] | None = None

    @classmethod
    def from_string(cls, name: str) -> Selection:
        return cls(name)

    def __post_init__(self) -> None:
        if self.rows is not None and any(r is not None and (isinstance(r, bool) or r < 0) for r in self.rows):
            raise ValueError(f"rows must be [start, stop] (non-negative integers or null), got {list(self.rows)}.")

    def describe(self) -> str:
        if self.rows is None:
            return self.config
        start, stop = self.rows
        return f"{self.config}[{start or 0}:{'' if stop is None else stop}]"


def describe_selections(selections: list[Selection]) -> str:
    """`full[0:400] + forget05`: config names and row ranges only, never text."""
    return " + ".join(selection.describe() for selection in selections)


def selections_json(selections: list[Selection]) -> list[dict[str, Any]]:
    """Selections as plain JSON (for fingerprints)."""
    return [{"config": s.config, "rows": None if s.rows is None else list(s.rows)} for s in selections]


def select_rows(selections: list[Selection], data_dir: str | os.PathLike | None):
    """The question/answer rows of the selections, concatenated in order (other columns dropped)."""
    from datasets import concatenate_datasets

    parts = []
    for selection in selections:
        data = load_tofu(selection.config, data_dir)
        missing = [c for c in ("question", "answer") if c not in data.column_names]
        if missing:
            raise ValueError(f"TOFU config {selection.config!r} lacks column(s) {missing}.")
        start, stop = selection.rows or (None, None)
        chosen = range(len(data))[slice(start, stop)]
        if selection.rows is not None and (len(chosen) == 0 or (stop is not None and stop > len(data))):
            raise ValueError(f"Selection {selection.describe()}: {selection.config} has {len(data)} rows.")
        parts.append(data.select_columns(["question", "answer"]).select(chosen))
    return concatenate_datasets(parts)
