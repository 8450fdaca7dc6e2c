"""The Markov results as a table like the IMU paper's Table 12, and the trade-off plot."""

from __future__ import annotations

import os
from typing import Any

from ...reporting import figure_axes, format_table, save_figure

__all__ = ["markov_table", "plot_markov_tradeoff"]


def markov_table(results: dict[str, Any]) -> str:
    """Rows like the IMU paper's Table 12: ℓ_r ↓, ℓ_r^KL ↓, ℓ_f ↑, ℓ_f^KL ↑, plus per forget chain, the unlearning
    time of each method and the training time of each model (IAU+GR's cost includes its original's training)."""
    columns = ["retain_loss", "retain_kl", "forget_loss", "forget_kl", "forget1_loss", "forget2_loss"]
    rows = [("Original", "original"), ("Retrained", "retrained")]
    if "original_gr" in results:  # trained with the gradient-restricted loss (IAU's training phase)
        rows.insert(1, ("Original (GR)", "original_gr"))
    training = results.get("training", {})
    table = [
        [label] + [results[key].get(column) for column in columns] + [None, training.get(key, {}).get("seconds")]
        for label, key in rows
    ]
    table += [
        [label] + [values.get(column) for column in columns] + [values.get("unlearn_seconds"), None]
        for label, values in results["methods"].items()
    ]
    return format_table(
        table, ["model", "ℓ_r ↓", "ℓ_r^KL ↓", "ℓ_f ↑", "ℓ_f^KL ↑", "ℓ_f1", "ℓ_f2", "unlearn (s)", "train (s)"]
    )


def plot_markov_tradeoff(results: dict[str, Any], path: str | os.PathLike) -> None:
    """Forget KL against retain KL after every unlearning step (one curve per method), and losses per step."""
    figure, (tradeoff, losses) = figure_axes(2, figsize=(12, 4.8))
    for label, method in results["methods"].items():
        history = method["history"]
        (line,) = tradeoff.plot([h["retain_kl"] for h in history], [h["forget_kl"] for h in history], "-", label=label)
        tradeoff.plot(history[-1]["retain_kl"], history[-1]["forget_kl"], "o", color=line.get_color())
        steps = [h["step"] for h in history]
        losses.plot(steps, [h["forget_loss"] for h in history], "-", color=line.get_color(), label=f"{label} ℓ_f")
        losses.plot(steps, [h["retain_loss"] for h in history], "--", color=line.get_color(), label=f"{label} ℓ_r")
    original = results["original"]
    tradeoff.plot(original["retain_kl"], original["forget_kl"], "k*", markersize=12, label="original")
    if "original_gr" in results:
        gr = results["original_gr"]
        tradeoff.plot(gr["retain_kl"], gr["forget_kl"], "*", color="gray", markersize=12, label="original (GR)")
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
    save_figure(figure, path)
