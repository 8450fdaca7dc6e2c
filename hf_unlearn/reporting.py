"""Tables and plots for results people would rather look at than read."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .runtime.io import atomic_path

__all__ = ["figure_axes", "format_table", "plot_influence_weights", "save_figure"]


def format_table(rows: list[list[Any]], header: list[str], precision: int = 3) -> str:
    """A plain-text table (GitHub-markdown compatible) with floats rounded to `precision` decimals."""

    def cell(value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.{precision}g}" if abs(value) < 10**-precision and value != 0 else f"{value:.{precision}f}"
        return str(value)

    cells = [header] + [[cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(text.ljust(width) for text, width in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def figure_axes(ncols: int = 1, figsize: tuple[float, float] = (6.4, 4.8)) -> tuple[Any, Any]:
    """A matplotlib figure and its axes on the non-interactive backend (plots are files, never windows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=figsize)


def save_figure(figure: Any, path: str | os.PathLike, dpi: int = 120) -> None:
    """Write a matplotlib figure atomically (a half-written PNG never replaces a good one) and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=dpi)
    plt.close(figure)


def plot_influence_weights(scores: Any, weights: Any, path: str | os.PathLike) -> None:
    """Histogram of IMU's removal scores and of the weights of the kept samples (numbers only, no text)."""
    scores, weights = np.asarray(scores, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    figure, (left, right) = figure_axes(2, figsize=(10, 3.8))
    left.hist(scores, bins=50, color="tab:blue")
    left.axvline(0.0, color="k", linewidth=0.8)
    left.set_xlabel("removal score Δ_i")
    left.set_ylabel("forget samples")
    left.set_title(f"Influence scores ({int((scores > 0).sum())}/{len(scores)} positive)")
    right.hist(weights[weights > 0], bins=50, color="tab:orange")
    right.set_xlabel("weight ŵ_i (mean 1 over kept samples)")
    right.set_title("IMU weights of kept samples")
    save_figure(figure, path, dpi=110)
