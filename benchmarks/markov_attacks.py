"""Robustness attacks on the Markov benchmark: relearning, quantization and the logit lens on every unlearned model.

Runs recipes/markov_attacks.yaml (or reads an existing run's results.json with --from), writes
benchmarks/results/markov_attacks.json (the run's numbers without the per-step unlearning trajectories) and
docs/results/markov_recovery.png, and prints the tables quoted in docs/results/attacks.md.

    python benchmarks/markov_attacks.py [--recipe recipes/markov_attacks.yaml] [--output-dir DIR] [--from RESULTS]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from hf_unlearn.reporting import format_table
from hf_unlearn.runtime.io import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
SETS = ("forget_subset", "related", "unrelated")


def _recovery(rows, attack, step=None, metric="forget1_loss", key="recovery"):
    for row in rows:
        if row["attack"] == attack and row["step"] == step:
            return row.get(key, {}).get(metric)
    return None


def _cell(value):
    return "–" if value is None else f"{value:.2f}"


def tables(payload: dict, metric: str = "forget1_loss") -> str:
    """Markdown: the forgetting each method reached, recovery under each attack with the retrained control, and
    the quantization's weight-change shares."""
    methods = {label: entry for label, entry in payload["methods"].items() if "attacks" in entry}
    original = payload["attack_controls"]["original"]["before"]
    retrained = payload["attack_controls"]["retrained"]["before"]
    lines = [
        f"Scores before any attack (the attacks' test rows): original {metric} {original[metric]:.3f}, "
        f"retrained {retrained[metric]:.3f}.",
        "",
    ]
    header = ["method", metric, "forget_kl", "retain_kl"]
    rows = [
        [
            label,
            entry["attacks"]["results"]["before"][metric],
            entry["attacks"]["results"]["before"]["forget_kl"],
            entry["attacks"]["results"]["before"]["retain_kl"],
        ]
        for label, entry in methods.items()
    ]
    lines += [format_table(rows, header), ""]
    control = next(iter(methods.values()))["attacks"]["recovery"]
    for steps in ((10, 50, 100),):
        header = ["method"] + [f"{name}@{step}" for name in SETS for step in steps]
        rows = []
        for label, entry in methods.items():
            rec = entry["attacks"]["recovery"]
            rows.append(
                [label] + [_cell(_recovery(rec, f"relearn/{name}", step, metric)) for name in SETS for step in steps]
            )
        rows.append(
            ["retrained (control)"]
            + [
                _cell(_recovery(control, f"relearn/{name}", step, metric, "retrained_recovery"))
                for name in SETS
                for step in steps
            ]
        )
        lines += [f"Recovery of {metric} after relearning (steps):", "", format_table(rows, header), ""]

    # Recovery divides by each model's own gap to the original: the absolute change shows the same attack's size.
    def drop(results, name, step):
        checkpoints = {c["step"]: c for c in results.get(f"relearn/{name}", {}).get("checkpoints", [])}
        if step not in checkpoints or 0 not in checkpoints:
            return None
        return checkpoints[step][metric] - checkpoints[0][metric]

    first = next(iter(methods.values()))["attacks"]["results"]
    step = max(c["step"] for c in first["relearn/forget_subset"]["checkpoints"])
    header = ["method"] + [f"{name}@{step}" for name in SETS]
    rows = [
        [label] + [drop(entry["attacks"]["results"], name, step) for name in SETS] for label, entry in methods.items()
    ]
    for name in ("original", "retrained"):
        rows.append([f"{name} (control)"] + [drop(payload["attack_controls"][name], s, step) for s in SETS])
    lines += [f"Absolute change of {metric} after {step} relearning steps:", "", format_table(rows, header), ""]
    header = [
        "method",
        "quant8",
        "quant4",
        "logit_lens",
        "Δ retain loss quant4",
        "changed (fp)",
        "changed (8-bit)",
        "changed (4-bit)",
    ]
    rows = []
    for label, entry in methods.items():
        rec, results = entry["attacks"]["recovery"], entry["attacks"]["results"]
        change8 = results.get("quant8", {}).get("record", {}).get("details", {})
        change4 = results.get("quant4", {}).get("record", {}).get("details", {})
        utility = next((row["utility_change"]["retain_loss"] for row in rec if row["attack"] == "quant4"), None)
        rows.append(
            [
                label,
                _cell(_recovery(rec, "quant8", None, metric)),
                _cell(_recovery(rec, "quant4", None, metric)),
                _cell(_recovery(rec, "logit_lens", None, metric)),
                "–" if utility is None else f"{utility:+.4f}",
                _cell(change4.get("code_change", {}).get("changed")),
                _cell(change8.get("value_change", {}).get("changed_quantized")),
                _cell(change4.get("value_change", {}).get("changed_quantized")),
            ]
        )
    rows.append(
        [
            "retrained (control)",
            _cell(_recovery(control, "quant8", None, metric, "retrained_recovery")),
            _cell(_recovery(control, "quant4", None, metric, "retrained_recovery")),
            _cell(_recovery(control, "logit_lens", None, metric, "retrained_recovery")),
            "",
            "",
            "",
            "",
        ]
    )
    lines += [
        f"Recovery of {metric} after quantization and through the logit lens; share of weights that differ from "
        "the original at full precision and once quantized (bitsandbytes' own values):",
        "",
        format_table(rows, header),
    ]
    return "\n".join(lines)


def trimmed(payload: dict) -> dict:
    """The run's numbers without the per-step unlearning trajectories (the recovery needs none of them)."""
    out = {key: value for key, value in payload.items() if key != "methods"}
    out["methods"] = {
        label: {key: value for key, value in entry.items() if key not in ("history",)}
        for label, entry in payload["methods"].items()
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "markov_attacks.yaml"))
    parser.add_argument("--output-dir", default=None, help="The run's output folder (default: the recipe's).")
    parser.add_argument("--from", dest="source", default=None, help="An existing run's results.json: no run.")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "markov_attacks.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # bitsandbytes looks for a kernel on the Hub otherwise
    if args.source is None:
        from hf_unlearn.cli import main as cli

        command = ["run", args.recipe] + (["--output-dir", args.output_dir] if args.output_dir else [])
        if cli(command) != 0:
            raise SystemExit(1)
        from hf_unlearn.recipe import load_recipe

        source = Path(args.output_dir or load_recipe(args.recipe)["output_dir"]) / "results.json"
    else:
        source = Path(args.source)
    payload = json.loads(source.read_text())
    atomic_write_json(args.out, trimmed(payload))
    plot = source.parent / "recovery.png"
    if plot.is_file():
        shutil.copyfile(plot, ROOT / "docs" / "results" / "markov_recovery.png")
    print(tables(payload))


if __name__ == "__main__":
    main()
