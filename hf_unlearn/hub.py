"""Model cards for the models the pipelines write (and, later, push): settings and numbers, never training text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .runtime.distributed import is_main_process
from .runtime.io import atomic_write_text

__all__ = ["write_model_card"]


def write_model_card(folder: Path, title: str, facts: dict[str, Any]) -> None:
    """A short README.md model card: what the model is and how it was made, as settings and numbers only.

    Never pass training text here: forget-set questions and answers must not travel with a model."""
    if not is_main_process():
        return
    lines = [
        f"# {title}",
        "",
        "Made with hf-unlearn. This card lists settings and data selections only: it holds no training text.",
        "",
    ]
    for key, value in facts.items():
        rendered = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        lines.append(f"- **{key}**: {rendered}")
    atomic_write_text(Path(folder) / "README.md", "\n".join(lines) + "\n")
