"""The MUSE table: one row per model (and per fold of a scalability or sustainability run)."""

from __future__ import annotations

from typing import Any

__all__ = ["muse_table"]

COLUMNS = (
    ("verbmem_f", "VerbMem on D_f ↓"),
    ("knowmem_f", "KnowMem on D_f ↓"),
    ("privleak", "PrivLeak (→ 0)"),
    ("knowmem_r", "KnowMem on D_r ↑"),
)


def _cell(value: Any) -> str:
    return "–" if value is None else f"{value:.1f}"


def muse_table(payload: dict[str, Any]) -> str:
    """A Markdown table of the MUSE metrics (×100; PrivLeak in %), lm-eval accuracies as extra columns."""
    rows: list[tuple[str, dict[str, Any]]] = [
        (role, payload["models"][role]["metrics"]) for role in ("target", "retain") if role in payload.get("models", {})
    ]
    for label, record in payload.get("methods", {}).items():
        for name, run in record.get("runs", {}).items():
            rows.append((label if name == "forget" else f"{label} ({name})", run["metrics"]))
    tasks = sorted({task for _, metrics in rows for task in (metrics.get("lm_eval") or {})})
    header = ["model", *(title for _, title in COLUMNS), *(f"{task} acc" for task in tasks)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, metrics in rows:
        cells = [_cell(metrics.get(key)) for key, _ in COLUMNS]
        lm = metrics.get("lm_eval") or {}
        cells += [_cell(100 * lm[task]["acc"]) if "acc" in lm.get(task, {}) else "–" for task in tasks]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)
