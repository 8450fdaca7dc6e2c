"""Several attacks on one model, and their recovery next to the retrained-model control: what a task's `attacks`
stage and `hf-unlearn attack` run. A task passes in what only it knows: how to score a model (`evaluate`), the rows
to relearn on and the rows to probe."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .record import QUANT_BACKENDS, recovery
from .relearning import RelearnArguments

__all__ = [
    "ATTACK_NAMES",
    "RELEARN_SETS",
    "AttackArguments",
    "attack_versions",
    "controls_recovery",
    "needs_calibration",
    "recovery_rows",
    "recovery_table",
    "run_attacks",
    "run_task_attacks",
    "unsupported_attacks",
]

ATTACK_NAMES = ("relearn", "quant8", "quant4", "paraphrase", "prefix", "few_shot", "logit_lens")
# (a) a seeded subset of the forget set, (b) related but different text, (c) unrelated text.
RELEARN_SETS = ("forget_subset", "related", "unrelated")


@dataclass
class AttackArguments:
    """The recipe's `attacks` section (and `hf-unlearn attack`'s settings).

    Parameters:
        attacks (`list[str]`, defaults to relearn, quant8, quant4, logit_lens):
            Which attacks run (`ATTACK_NAMES`); a task refuses those it cannot run.
        relearn (`RelearnArguments`):
            Steps scored, learning rate, batch, LoRA or full fine-tuning.
        relearn_sets (`list[str]`, defaults to all of `RELEARN_SETS`):
            What is relearned: a seeded forget subset, related text, unrelated text.
        relearn_rows (`int`, defaults to `100`):
            Rows in each relearning set.
        quant_backend (`str`, defaults to `"bitsandbytes"`):
            `bitsandbytes`, `torchao`, `rtn` or `gptq` (`hf_unlearn.attacks.quantization`).
        quant4_type (`str`, defaults to `"fp4"`):
            bitsandbytes 4-bit type: fp4 (its default, the quantization study's setting) or nf4.
        group_size (`int`, defaults to `64`):
            Weights per group for torchao's int4, GPTQ and the round-to-nearest code comparison.
        calibration_rows (`int`, defaults to `128`):
            Rows of text without the forget set (the task's retain data) GPTQ calibrates on.
        prefix_tokens (`int`, defaults to `3`):
            Answer tokens given as context by the prefix probe.
        controls (`bool`, defaults to `True`):
            Attack the original and retrained models the same way.
        eval_examples (`int` or `None`, defaults to `None`):
            Rows per test split the attacked models are scored on (a task reads it; None: all). Every model, attacked
            or not, is scored on the same rows, so recovery compares like with like.
        seed (`int`, defaults to `0`):
            Seed of the relearning subset.
    """

    attacks: list[str] = field(
        default_factory=lambda: ["relearn", "quant8", "quant4", "logit_lens"], metadata={"help": "Attacks to run."}
    )
    relearn: RelearnArguments = field(default_factory=RelearnArguments)
    relearn_sets: list[str] = field(default_factory=lambda: list(RELEARN_SETS), metadata={"help": "Sets relearned."})
    relearn_rows: int = field(default=100, metadata={"help": "Rows per relearning set."})
    quant_backend: str = field(default="bitsandbytes", metadata={"help": "bitsandbytes, torchao, rtn or gptq."})
    quant4_type: str = field(default="fp4", metadata={"help": "bitsandbytes 4-bit type: fp4 or nf4."})
    group_size: int = field(default=64, metadata={"help": "Group size of int4 round-to-nearest and GPTQ."})
    calibration_rows: int = field(default=128, metadata={"help": "Retain rows GPTQ calibrates on."})
    prefix_tokens: int = field(default=3, metadata={"help": "Answer tokens given by the prefix probe."})
    controls: bool = field(default=True, metadata={"help": "Attack the original and retrained models too."})
    eval_examples: int | None = field(
        default=None, metadata={"help": "Rows per test split the attacked models are scored on (None: all)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the relearning subset."})

    def __post_init__(self) -> None:
        for name in self.attacks:
            if name not in ATTACK_NAMES:
                raise ValueError(f"attacks: {name!r} is not one of {', '.join(ATTACK_NAMES)}.")
        for name in self.relearn_sets:
            if name not in RELEARN_SETS:
                raise ValueError(f"relearn_sets: {name!r} is not one of {', '.join(RELEARN_SETS)}.")
        if self.quant_backend not in QUANT_BACKENDS:
            raise ValueError(f"quant_backend must be one of {', '.join(QUANT_BACKENDS)}, got {self.quant_backend!r}.")
        if self.quant4_type not in ("fp4", "nf4"):
            raise ValueError(f"quant4_type must be fp4 or nf4, got {self.quant4_type!r}.")
        if self.eval_examples is not None and self.eval_examples < 1:
            raise ValueError(f"eval_examples must be >= 1 or null, got {self.eval_examples}.")
        if self.relearn_rows < 1:
            raise ValueError(f"relearn_rows must be >= 1, got {self.relearn_rows}.")
        if self.calibration_rows < 1:
            raise ValueError(f"calibration_rows must be >= 1, got {self.calibration_rows}.")
        if isinstance(self.relearn, dict):
            self.relearn = RelearnArguments(**self.relearn)

    def settings(self) -> dict[str, Any]:
        """The settings the attacks' results depend on (a cached stage's key): `calibration_rows` only where GPTQ
        calibrates, so a cached stage stays valid when an unused setting changes or is added."""
        settings = dataclasses.asdict(self)
        if not needs_calibration(self):
            del settings["calibration_rows"]
        return settings


def unsupported_attacks(
    args: AttackArguments | None,
    task: str,
    attacks: tuple[str, ...],
    relearn_sets: tuple[str, ...] = RELEARN_SETS,
    why_not_relearned: str = "",
) -> str | None:
    """A one-line message naming what of `args` the `task` cannot run (it runs `attacks` and relearns
    `relearn_sets`; `why_not_relearned` says why not the others), None when it can run all of it: each task checks
    its recipe's `attacks` section with it."""
    if args is None:
        return None
    other = [name for name in args.attacks if name not in attacks]
    if other:
        return f"attacks.attacks: {', '.join(other)} cannot run on the {task} task (it runs {', '.join(attacks)})."
    other = [name for name in args.relearn_sets if name not in relearn_sets]
    if other and "relearn" in args.attacks:
        return (
            f"attacks.relearn_sets: {', '.join(other)} cannot run on the {task} task (it relearns "
            f"{', '.join(relearn_sets)}{'; ' + why_not_relearned if why_not_relearned else ''})."
        )
    return None


def run_attacks(
    model,
    args: AttackArguments,
    evaluate: Callable[[Any], dict[str, float | None]],
    relearn_sets: dict[str, Any] | None = None,
    probes: dict[str, list[dict[str, Any]]] | None = None,
    pad_token_id: int = 0,
    data_collator: Callable | None = None,
    original=None,
    progress: Callable[[str], None] | None = None,
    calibration: list[list[int]] | None = None,
    quantized_original: dict | None = None,
) -> dict[str, Any]:
    """Every attack of `args.attacks` on `model` (left unchanged).

    `evaluate(model) -> metrics` scores a model; `relearn_sets` maps each of `args.relearn_sets` to its rows;
    `probes` maps a split name (e.g. "forget1") to rows for the probes, with `"paraphrase"` the rows asked another
    way and `"few_shot_context"` a single row whose `input_ids` are the context; with `original` (the model before
    unlearning) a quantization attack also records how many weights differ from the original's once both are
    quantized (`quantized_value_change`, `quantized_code_change`); `progress` is called with each attack's name;
    `calibration`: token ids without the forget set, for the `gptq` backend. `quantized_original`: a dict kept by the
    caller across the calls that share `original` (a run attacking several models): the original's quantized weights
    are computed once per setting and read from it afterwards (GPTQ calibrates once, not once per attacked model).
    Returns `"before"` (`evaluate(model)`: the scores every recovery starts from) and attack name ->
    `{"metrics" | "checkpoints" | "layers": ..., "record": AttackRecord.to_dict()}`.
    """
    from .probes import few_shot_probe, logit_lens, prefix_probe, token_loss
    from .quantization import quantize, quantized_code_change, quantized_value_change, quiet_bitsandbytes
    from .relearning import relearn

    probes = probes or {}
    splits = {name: rows for name, rows in probes.items() if name not in ("paraphrase", "few_shot_context")}
    say = progress or (lambda line: None)
    results: dict[str, Any] = {"before": evaluate(model)}
    for name in args.attacks:
        say(name)
        if name == "relearn":
            for set_name in args.relearn_sets:
                _, record = relearn(
                    model, relearn_sets[set_name], evaluate, args.relearn, data_collator, name=f"relearn/{set_name}"
                )
                results[f"relearn/{set_name}"] = {
                    "checkpoints": record.details.pop("checkpoints"),
                    "record": record.to_dict(),
                }
        elif name in ("quant8", "quant4"):
            bits = int(name[-1])
            settings = (bits, args.quant_backend, args.quant4_type, args.group_size)
            weights: dict = {}
            quantized, record = quantize(model, *settings, weights_out=weights, calibration=calibration)
            if original is not None:  # the weights as quantized, read before any forward pass (see quantize)
                memo = {} if quantized_original is None else quantized_original
                key = (id(original), *settings)
                if key not in memo:
                    memo[key] = {}
                    quantize(original, *settings, weights_out=memo[key], calibration=calibration)
                reference = memo[key]
                record.details["value_change"] = quantized_value_change(reference, weights)
                record.details["code_change"] = quantized_code_change(original, model, bits, args.group_size)
            with quiet_bitsandbytes():
                results[name] = {"metrics": evaluate(quantized), "record": record.to_dict()}
            del quantized
        elif name == "logit_lens":
            layers = {split: logit_lens(model, rows, pad_token_id) for split, rows in splits.items()}
            results[name] = {"layers": layers, "record": {"name": name, "settings": {}, "details": {}}}
        elif name == "prefix":
            metrics = {
                f"{split}_loss": prefix_probe(model, rows, args.prefix_tokens, pad_token_id)
                for split, rows in splits.items()
            }
            results[name] = {
                "metrics": metrics,
                "record": {"name": name, "settings": {"prefix_tokens": args.prefix_tokens}},
            }
        elif name == "paraphrase":
            results[name] = {"metrics": {"forget_loss": token_loss(model, probes["paraphrase"], pad_token_id)}}
        elif name == "few_shot":
            context = probes["few_shot_context"][0]["input_ids"]
            metrics = {
                f"{split}_loss": few_shot_probe(model, rows, context, pad_token_id) for split, rows in splits.items()
            }
            results[name] = {"metrics": metrics, "record": {"name": name, "settings": {"context_tokens": len(context)}}}
    return results


def _lens_metrics(layers: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    """The best intermediate layer's loss per split (`<split>_loss`): what an attacker reading the layers gets."""
    return {f"{split}_loss": min(entry["loss"] for entry in entries[:-1]) for split, entries in layers.items()}


def _final_lens_metrics(layers: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    return {f"{split}_loss": entries[-1]["loss"] for split, entries in layers.items()}


def recovery_rows(
    attacked: dict[str, Any],
    base: dict[str, dict[str, float | None]],
    keys: list[str],
    utility_keys: list[str],
    retrained_attacked: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per attack (per relearning checkpoint): the recovery of each forget metric of `keys`, the same attack's
    recovery on the retrained model (the floor a perfect unlearner would show) and the utility change it cost.

    `attacked` and `retrained_attacked`: `run_attacks` results of the unlearned and the retrained model; `base`:
    `{"unlearned", "original", "retrained"}` -> metrics before any attack (scored as the attacked models are)."""
    rows = []

    def row(attack, step, after, retrained_after, before=None, original=None, retrained_before=None, names=keys):
        before = before or base["unlearned"]
        original = original or base["original"]
        retrained_before = retrained_before or base["retrained"]
        entry = {
            "attack": attack,
            "step": step,
            "recovery": recovery(after, before, original, names),
            "utility_change": {
                key: None if after.get(key) is None or before.get(key) is None else after[key] - before[key]
                for key in utility_keys
            },
        }
        if retrained_after is not None:
            entry["retrained_recovery"] = recovery(retrained_after, retrained_before, original, names)
        rows.append(entry)

    control = retrained_attacked or {}
    for name, result in attacked.items():
        if name == "before":
            continue
        if "checkpoints" in result:
            control_steps = {c["step"]: c for c in control.get(name, {}).get("checkpoints", [])}
            for checkpoint in result["checkpoints"]:
                row(name, checkpoint["step"], checkpoint, control_steps.get(checkpoint["step"]))
        elif name == "logit_lens":
            # The attacked value is the best intermediate layer's loss, the unattacked one the output's; the
            # original's output loss is the reference (`base["original_lens"]`: the original's logit_lens layers).
            retrained_lens = control.get(name)
            original_lens = base.get("original_lens")
            if original_lens is None:
                continue
            row(
                name,
                None,
                _lens_metrics(result["layers"]),
                _lens_metrics(retrained_lens["layers"]) if retrained_lens else None,
                before=_final_lens_metrics(result["layers"]),
                original=_final_lens_metrics(original_lens),
                retrained_before=_final_lens_metrics(retrained_lens["layers"]) if retrained_lens else None,
                names=list(_lens_metrics(result["layers"])),
            )
        elif "metrics" in result:
            row(name, None, result["metrics"], control.get(name, {}).get("metrics"))
    return rows


def run_task_attacks(model, args: AttackArguments, inputs: dict[str, Any], original=None, progress=None):
    """`run_attacks` with a task's attack inputs: `{"evaluator", "relearn_sets", "probes", "pad_token_id",
    "data_collator"}` and, for GPTQ, `"calibration"` (what `markov_attack_inputs` and `tofu_attack_inputs` build).
    The original's quantized weights are kept in `inputs["quantized_original"]` for the run's next attacked model."""
    return run_attacks(
        model,
        args,
        inputs["evaluator"],
        inputs["relearn_sets"],
        inputs["probes"],
        inputs["pad_token_id"],
        inputs["data_collator"],
        original=original,
        progress=progress,
        calibration=inputs.get("calibration"),
        quantized_original=inputs.setdefault("quantized_original", {}),
    )


def needs_calibration(args: AttackArguments) -> bool:
    """Whether the attacks of `args` quantize with GPTQ (a task then builds calibration rows)."""
    return args.quant_backend == "gptq" and bool({"quant8", "quant4"} & set(args.attacks))


def controls_recovery(
    attacked: dict[str, Any], controls: dict[str, Any], keys: list[str], utility_keys: list[str]
) -> list[dict[str, Any]]:
    """`recovery_rows` of one unlearned model against a run's controls (`{"original", "retrained"}` -> their
    `run_attacks` results, or only `{"original": {"before": ...}}` without controls), every model scored before the
    attacks as the attacks score them (`"before"`)."""
    base = {name: controls[name]["before"] for name in ("original", "retrained") if name in controls}
    base.setdefault("retrained", {})
    base["unlearned"] = attacked["before"]
    if "original" in controls and "logit_lens" in controls["original"]:
        base["original_lens"] = controls["original"]["logit_lens"]["layers"]
    return recovery_rows(attacked, base, keys, utility_keys, controls.get("retrained"))


def recovery_table(
    methods: dict[str, dict[str, Any]],
    metric: str,
    utility: str,
    steps=(10, 50, 100),
    probe_metric: str | None = None,
) -> str:
    """Markdown: per method (label -> `{"results", "recovery"}`), the recovery of `metric` under each attack
    (relearning at `steps`), the retrained model's in brackets and the change of `utility` after the attack;
    `probe_metric` is read for the probes (paraphrase, prefix, logit lens: their metrics are losses)."""
    if not methods:
        return ""
    columns: list[tuple[str, int | None]] = []
    for rows in methods.values():
        for row in rows["recovery"]:
            key = (row["attack"], row["step"])
            if (row["step"] is None or row["step"] in steps) and key not in columns:
                columns.append(key)
    header = ["method"] + [attack + (f"@{step}" if step is not None else "") for attack, step in columns]
    lines = [
        f"Recovery of {metric} (retrained model's in brackets; Δ {utility} after the attack):",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for label, rows in methods.items():
        cells = [label]
        by_key = {(row["attack"], row["step"]): row for row in rows["recovery"]}
        for key in columns:
            row = by_key.get(key)
            if row is None:
                cells.append("")
                continue
            probe = key[0] in ("paraphrase", "prefix", "few_shot", "logit_lens")
            name = probe_metric if probe and probe_metric else metric
            value = row["recovery"].get(name)
            control = row.get("retrained_recovery", {}).get(name)
            change = row["utility_change"].get(utility)
            cells.append(f"{_number(value)} ({_number(control)})" + (f" Δ{change:+.3f}" if change is not None else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def attack_versions(args: AttackArguments) -> dict[str, str | None]:
    """The versions of the libraries the attacks of `args` run through (the quantization backend, peft for LoRA
    relearning), for a cached stage's fingerprint."""
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    versions = {"peft": None}
    if args.quant_backend in ("bitsandbytes", "torchao") and {"quant8", "quant4"} & set(args.attacks):
        versions[args.quant_backend] = version(args.quant_backend)
    if needs_calibration(args):
        versions.update(optimum=version("optimum"), gptqmodel=version("gptqmodel"))
    if args.relearn.lora is not None:
        versions["peft"] = version("peft")
    return versions
