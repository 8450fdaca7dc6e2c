"""TOFU reports: the IMU paper's Table 13 with forget quality and truth ratio, sample generations (Tables 14-15
style), the utility-forgetting trade-off plot (`write_tofu_reports` writes the three into a run's output folder), and
the metric table `hf-unlearn eval` prints."""

from __future__ import annotations

import os
from typing import Any

from ...evaluation.tofu import MAIN_METRICS, UTILITY_COMPONENTS
from ...reporting import figure_axes, format_table, save_figure
from ...runtime.distributed import is_main_process
from ...runtime.io import atomic_write_text

__all__ = ["format_summary_table", "format_tofu_samples", "plot_tofu_tradeoff", "tofu_table", "write_tofu_reports"]


def format_summary_table(summary: dict[str, Any]) -> str:
    """The aggregate metrics of one evaluation as an aligned two-column table (numbers only: no forget-set text)."""

    def fmt(value: Any) -> str:
        if value is None:
            return "None"
        if isinstance(value, float) and value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
            return f"{value:.3e}"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = [f"{'metric':<28} value", "-" * 40]
    for name in MAIN_METRICS:
        if name in summary:
            lines.append(f"{name:<28} {fmt(summary[name])}")
            if name == "model_utility":
                lines += [f"  {c:<26} {fmt(summary.get(c))}" for c in UTILITY_COMPONENTS if c in summary]
    timing = summary.get("timing_s", {})
    if "total" in timing:
        lines.append(f"{'wall time (s)':<28} {timing['total']:.1f}")
    return "\n".join(lines)


# The IMU paper's Table 13 columns (MU, ES, forget prob, forget ROUGE, privleak, minutes) plus forget_quality and the
# forget truth ratio.
TOFU_COLUMNS = [
    ("model_utility", "MU ↑"),
    ("forget_quality", "forget quality ↑"),
    ("forget_truth_ratio", "forget TR"),
    ("extraction_strength", "ES ↓"),
    ("forget_Q_A_Prob", "forget prob ↓"),
    ("forget_Q_A_ROUGE", "forget ROUGE ↓"),
    ("privleak", "privleak → 0"),
]


def _tofu_rows(results: dict[str, Any]) -> list[tuple[str, dict[str, Any], float | None]]:
    """`(label, metrics, unlearning minutes)` for the target ("full"), the retain model and every method.

    The retain model is the reference of forget_quality and privleak, so both are blank in its row rather than
    computed against a default."""
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
    rows = [
        [label] + [metrics.get(key) for key, _ in TOFU_COLUMNS] + [minutes]
        for label, metrics, minutes in _tofu_rows(results)
    ]
    return format_table(rows, ["model"] + [title for _, title in TOFU_COLUMNS] + ["run time (min)"])


def _cell_text(text: Any) -> str:
    return "–" if text is None else " ".join(str(text).split()).replace("|", "\\|")


def format_tofu_samples(
    samples: dict[str, dict[str, list[dict[str, Any]]]], labels: list[str], include_forget: bool
) -> str:
    """Greedy answers of every model to the same questions, like the IMU paper's Tables 14-15 (markdown).

    `samples[label][split]` lists `{question, answer, generation}` per item. Forget questions are written only with
    `include_forget=True` (the recipe's explicit opt-in): a forget set must not leak into reports by default."""
    splits = [("retain", "Retain (retain_perturbed)")] + ([("forget", "Forget set")] if include_forget else [])
    note = "" if include_forget else " Forget-set questions are not shown (opt in with report.forget_samples)."
    lines = ["# Sample generations", "", "Greedy generations from the TOFU evaluation of each model." + note, ""]
    for split, title in splits:
        reference = next((samples[label][split] for label in labels if label in samples), [])
        for i, item in enumerate(reference):
            lines += [
                f"## {title}, question {i + 1}",
                "",
                f"**Question:** {_cell_text(item['question'])}",
                "",
                f"**Ground truth:** {_cell_text(item['answer'])}",
                "",
                "| model | answer |",
                "|---|---|",
            ]
            for label in labels:
                rows = samples.get(label, {}).get(split, [])
                lines.append(f"| {label} | {_cell_text(rows[i].get('generation') if i < len(rows) else None)} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def plot_tofu_tradeoff(results: dict[str, Any], path: str | os.PathLike) -> None:
    """Model utility against forget ROUGE, one point per method, with the target and retain models as references:
    up and to the left is better (useful and forgotten)."""
    figure, axis = figure_axes()
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


def write_tofu_reports(plan, payload: dict[str, Any], samples: dict[str, Any]) -> str | None:
    """table.md (with the attacks' table when the recipe has attacks), samples.md and tradeoff.png of every model in
    `payload` so far, in the recipe's output folder (main process only); returns the table."""
    if not is_main_process():
        return None
    table = tofu_table(payload)
    if plan.attacks is not None:
        from .attacks import tofu_attacks_table

        attacks = tofu_attacks_table(payload)
        table += "\n\n" + attacks if attacks else ""
    atomic_write_text(plan.output_dir / "table.md", table + "\n")
    labels = ["target", "retain", *plan.methods]
    atomic_write_text(
        plan.output_dir / "samples.md", format_tofu_samples(samples, labels, plan.report.forget_samples > 0)
    )
    plot_tofu_tradeoff(payload, plan.output_dir / "tradeoff.png")
    return table
