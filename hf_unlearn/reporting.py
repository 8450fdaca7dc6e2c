"""Tables and plots for results people would rather look at than read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["format_table", "format_tofu_samples", "plot_markov_tradeoff", "save_figure", "plot_tofu_tradeoff", "tofu_table"]


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


def save_figure(figure: Any, path: str | os.PathLike, dpi: int = 120) -> None:
    """Write a matplotlib figure atomically (a half-written PNG never replaces a good one) and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=dpi)
    plt.close(figure)
    os.replace(tmp, path)


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
    save_figure(figure, path)


# ------------------------------------------------------------------------------------------------ TOFU

# The IMU paper's Table 13 columns (MU, ES, forget prob, forget ROUGE, privleak, minutes) plus forget_quality and the
# forget truth ratio.
TOFU_COLUMNS = [("model_utility", "MU ↑"), ("forget_quality", "forget quality ↑"), ("forget_truth_ratio", "forget TR"),
                ("extraction_strength", "ES ↓"), ("forget_Q_A_Prob", "forget prob ↓"),
                ("forget_Q_A_ROUGE", "forget ROUGE ↓"), ("privleak", "privleak → 0")]  # fmt: skip


def _tofu_rows(results: dict[str, Any]) -> list[tuple[str, dict[str, Any], float | None]]:
    """`(label, metrics, unlearning minutes)` for the target ("full"), the retain model and every method.

    The retain model is the reference of forget_quality and privleak, so both are blank in its row (as in SPEC §3's
    reference values) rather than computed against a default."""
    models = results.get("models", {})
    rows = []
    if "target" in models:
        rows.append(("Target (full)", models["target"]["metrics"], None))
    if "retain" in models:
        rows.append(("Retain", {**models["retain"]["metrics"], "forget_quality": None, "privleak": None}, None))
    for label, method in results.get("methods", {}).items():
        if "metrics" in method:
            seconds = method.get("unlearn_seconds")
            rows.append((label, method["metrics"], None if seconds is None else seconds / 60))
    return rows


def tofu_table(results: dict[str, Any]) -> str:
    """The TOFU results as a markdown table: Table 13 of the IMU paper plus forget_quality and truth ratio; run time
    is the unlearning wall time in minutes (one-off passes such as IMU's influence scores included)."""
    rows = [[label] + [metrics.get(key) for key, _ in TOFU_COLUMNS] + [minutes]
            for label, metrics, minutes in _tofu_rows(results)]  # fmt: skip
    return format_table(rows, ["model"] + [title for _, title in TOFU_COLUMNS] + ["run time (min)"])


def _cell_text(text: Any) -> str:
    return "–" if text is None else " ".join(str(text).split()).replace("|", "\\|")


def format_tofu_samples(samples: dict[str, dict[str, list[dict[str, Any]]]], labels: list[str],
                        include_forget: bool) -> str:  # fmt: skip
    """Greedy answers of every model to the same questions, like the IMU paper's Tables 14-15 (markdown).

    `samples[label][split]` lists `{question, answer, generation}` per item. Forget questions are written only with
    `include_forget=True` (the recipe's explicit opt-in): a forget set must not leak into reports by default."""
    splits = [("retain", "Retain (retain_perturbed)")] + ([("forget", "Forget set")] if include_forget else [])
    note = "" if include_forget else " Forget-set questions are not shown (opt in with report.forget_samples)."
    lines = ["# Sample generations", "", "Greedy generations from the TOFU evaluation of each model." + note, ""]
    for split, title in splits:
        reference = next((samples[label][split] for label in labels if label in samples), [])
        for i, item in enumerate(reference):
            lines += [f"## {title}, question {i + 1}", "", f"**Question:** {_cell_text(item['question'])}", "",
                      f"**Ground truth:** {_cell_text(item['answer'])}", "", "| model | answer |", "|---|---|"]  # fmt: skip
            for label in labels:
                rows = samples.get(label, {}).get(split, [])
                lines.append(f"| {label} | {_cell_text(rows[i].get('generation') if i < len(rows) else None)} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def plot_tofu_tradeoff(results: dict[str, Any], path: str | os.PathLike) -> None:
    """Model utility against forget ROUGE, one point per method, with the target and retain models as references:
    up and to the left is better (useful and forgotten)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.8))
    for label, metrics, _ in _tofu_rows(results):
        x, y = metrics.get("forget_Q_A_ROUGE"), metrics.get("model_utility")
        if x is None or y is None:
            continue
        marker = {"Target (full)": "k*", "Retain": "ks"}.get(label, "o")
        axis.plot(x, y, marker, markersize=12 if marker == "k*" else 8)
        axis.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=9)
    axis.set_xlabel("forget ROUGE-L recall (lower = more forgotten)")
    axis.set_ylabel("model utility (higher is better)")
    axis.set_title("TOFU trade-off: utility vs forgetting")
    axis.grid(alpha=0.3)
    save_figure(figure, path)
