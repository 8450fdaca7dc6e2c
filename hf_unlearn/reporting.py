"""Tables and plots for results people would rather look at than read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["format_table", "plot_markov_tradeoff"]


def format_table(rows: list[list[Any]], header: list[str], precision: int = 3) -> str:
    """A plain-text table (GitHub-markdown compatible) with floats rounded to `precision` decimals."""

    def cell(value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.{precision}g}" if abs(value) < 10 ** -precision and value != 0 else f"{value:.{precision}f}"
        return str(value)

    cells = [header] + [[cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(text.ljust(width) for text, width in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def plot_markov_tradeoff(results: dict[str, Any], path: str | os.PathLike) -> None:
    """Forget KL against retain KL after every unlearning step (one curve per method), and losses per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (tradeoff, losses) = plt.subplots(1, 2, figsize=(12, 4.8))
    for label, method in results["methods"].items():
        history = method["history"]
        line, = tradeoff.plot([h["retain_kl"] for h in history], [h["forget_kl"] for h in history], "-", label=label)
        tradeoff.plot(history[-1]["retain_kl"], history[-1]["forget_kl"], "o", color=line.get_color())
        steps = [h["step"] for h in history]
        losses.plot(steps, [h["forget_loss"] for h in history], "-", color=line.get_color(), label=f"{label} ℓ_f")
        losses.plot(steps, [h["retain_loss"] for h in history], "--", color=line.get_color(), label=f"{label} ℓ_r")
    original = results["original"]
    tradeoff.plot(original["retain_kl"], original["forget_kl"], "k*", markersize=12, label="original")
    tradeoff.set_xlabel("retain KL to retrained, ℓ_r^KL (lower is better)")
    tradeoff.set_ylabel("forget KL to retrained, ℓ_f^KL (higher = more forgotten)")
    tradeoff.set_title("Trade-off along the unlearning trajectory")
    tradeoff.legend()
    for key, style in (("forget_loss", "-"), ("retain_loss", "--")):
        losses.axhline(results["retrained"][key], color="gray", linestyle=style, linewidth=0.8)
    losses.set_xlabel("unlearning step")
    losses.set_ylabel("test cross-entropy (grey: retrained model)")
    losses.set_title("Forget (solid) and retain (dashed) loss")
    losses.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    figure.savefig(tmp, dpi=120)
    plt.close(figure)
    os.replace(tmp, path)
