"""TOFU end to end (`hf-unlearn run recipes/tofu/...`): target and retain models (given or fine-tuned), unlearning with
every method of the recipe, the TOFU suite (`docs/metrics.md#tofu`) on every model, and the IMU paper's Table 13 with forget_quality
and truth ratio, sample generations and a trade-off plot.

Stages, each cached in its own folder with a fingerprint stamp and resumable across sessions:

    models/{target,retain}/        fine-tuned models (`finetune.py`; `run_finetune`, `hf-unlearn finetune`, runs
                                   just these)
    eval/{retain,target}/          their TOFU evaluations (`eval_stage.py`; the retain one is the reference of
                                   forget_quality and privleak)
    methods/<label>/model/         each unlearned model (`unlearn.py`; safetensors, with `unlearn_lora` the adapter
                                   only)
    methods/<label>/eval/          its TOFU evaluation
    methods/<label>/hub/           with push_to_hub: what is pushed, written after the evaluation (`publish.py`)
    results.json                   metrics and the wall time of every stage, rewritten after every stage
    table.md, samples.md, tradeoff.png   the reports (`report.py`), rewritten after every stage too

Privacy: forget-set text never goes into the log, `results.json`, model cards or the table. `samples.md` holds retain
questions, and forget questions only when the recipe opts in (`report.forget_samples > 0`; TOFU is public fictitious
data, a user's forget set is not). The evaluations' own `items.json` files keep per-item text and generations (so
aggregates can be recomputed): keep `eval/` folders local.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ...evaluation.tofu import MAIN_METRICS, TEACHER_FORCED_UTILITY, UTILITY_COMPONENTS
from ...runtime.distributed import is_main_process, join_process_group, main_process_print
from ...runtime.prologue import run_prologue
from .checks import check_tofu_inputs, training_batches
from .data import select_rows
from .eval_stage import evaluate_tofu_stage
from .finetune import check_data_separation, ensure_models, load_model
from .publish import publish
from .recipe import ModelSpec, TofuRecipe, describe_plan, parse_tofu_recipe
from .report import write_tofu_reports
from .unlearn import unlearn_method

if TYPE_CHECKING:
    from ...runtime.cache import StageLog

__all__ = [
    "METRICS",
    "RESULT_FILES",
    "describe_data",
    "load_attack_model",
    "memorisation_check",
    "run_finetune",
    "run_stages",
]

# What one run writes at the top of its output folder; an earlier run's copies move to `previous/` when it starts.
RESULT_FILES = ("results.json", "table.md", "samples.md", "tradeoff.png")

# Kept in results.json (numbers and fixed notices only; per-item values stay in each evaluation's items.json).
METRICS = [*MAIN_METRICS, "privleak_reference_auc", *UTILITY_COMPONENTS, TEACHER_FORCED_UTILITY, "num_items", "notices"]
TRAJECTORY_ONLY = (
    "trajectory.evaluate_at_end is false: these are the last trajectory evaluation's teacher-forced metrics on the "
    "trajectory's items (no generation, no ROUGE)."
)
# The target must know the forget set far better than the retain model, or there is nothing to unlearn.
MEMORISATION_MARGIN = 0.2
PathLike = str | os.PathLike | None


def run_stages(plan: TofuRecipe, log: StageLog, device: str | None) -> None:
    """Every stage of a TOFU run: target and retain models (given or fine-tuned), their evaluations, then each method's
    unlearning and evaluation, metrics added to `log.payload` and the reports (`report.write_tofu_reports`) rewritten
    after each, so that an interrupted run keeps the table of what it finished; the last table is printed."""
    payload = log.payload
    samples: dict[str, Any] = {}  # the generations shown in samples.md (in memory only: they hold question text)
    payload.update(models={}, methods={}, checks={})
    models = ensure_models(plan, log, device)
    reference = _model_eval_dir(plan, "retain")
    for role in ("retain", "target"):  # the retain model first: it is the reference of the others
        summary = _evaluate(
            plan,
            log,
            role,
            models[role],
            _model_eval_dir(plan, role),
            None if role == "retain" else reference,
            samples,
            device,
        )
        payload["models"][role] = {"source": models[role].describe(), "metrics": summary}
    payload["checks"]["memorisation"] = memorisation_check(
        payload["models"]["target"]["metrics"], payload["models"]["retain"]["metrics"]
    )
    log.save(complete=False)
    table = write_tofu_reports(plan, payload, samples)
    attacks = _attack_controls(plan, log, models, device) if plan.attacks is not None else None
    for label, spec in plan.methods.items():
        unlearned, record = unlearn_method(plan, log, label, spec, models["target"], reference, device)
        _free()  # the trainer and its model, before the evaluation loads the unlearned one
        payload["methods"][label] = {
            "method": spec["method"],
            "settings": {k: v for k, v in spec.items() if k != "method"},
            "model": unlearned.describe(),
            "unlearn_seconds": record.get("seconds"),
            "unlearn_steps": record.get("steps"),
        }
        if "history" in record:  # with `trajectory:` (cheap evaluations during unlearning)
            payload["methods"][label].update(
                history=record["history"],
                trajectory_eval_seconds=record.get("eval_seconds"),
                stopped=record.get("stopped"),
            )
        if plan.trajectory is not None and not plan.trajectory.evaluate_at_end:  # a sweep: the last evaluation
            payload["methods"][label]["metrics"] = {**record["history"][-1], "notices": [TRAJECTORY_ONLY]}
        else:
            payload["methods"][label]["metrics"] = _evaluate(
                plan, log, label, unlearned, plan.output_dir / "methods" / label / "eval", reference, samples, device
            )
        if label in plan.hub and is_main_process():  # after the evaluation: the card carries its summary
            payload["methods"][label]["hub"] = publish(
                plan, label, plan.hub[label], payload, models["target"], unlearned, record, device
            )
        if attacks is not None:  # the attacks stage: after the method's evaluation, against the controls
            from .attacks import attack_method

            model, _ = load_attack_model(unlearned, device)
            attack_method(log, plan, label, model, *attacks, payload, payload["attack_controls"])
            del model
            _free()
        log.save(complete=False)
        table = write_tofu_reports(plan, payload, samples)
    if table is not None:  # the main process
        print(table)


def _attack_controls(plan: TofuRecipe, log: StageLog, models: dict[str, ModelSpec], device: str | None):
    """Load the target (the attacks' `original`) and retain (`retrained`) models, build the attacks' inputs and run
    the control stages (`tasks/tofu/attacks.py`); returns (models, inputs) for the methods' attacks."""
    from ...runtime.distributed import num_processes
    from .attacks import attack_controls, tofu_attack_inputs

    if num_processes() > 1:
        raise ValueError("The attacks stage runs in one process: run this recipe without torchrun.")
    loaded = {}
    for name, role in (("original", "target"), ("retrained", "retain")):
        loaded[name], tokenizer = load_attack_model(models[role], device)
    inputs = tofu_attack_inputs(plan, tokenizer)
    log.payload["attack_controls"] = attack_controls(log, plan, loaded, inputs)
    log.save(complete=False)
    return loaded, inputs


def memorisation_check(target: dict[str, Any], retain: dict[str, Any], margin: float = MEMORISATION_MARGIN) -> dict:
    """Did fine-tuning memorise the forget set? The target's forget Q_A prob and extraction strength must exceed the
    retain model's by `margin` (absolute); the released Llama-3.2-1B models: 0.885 vs 0.127 and 0.727 vs 0.063."""
    gaps = {key: target[key] - retain[key] for key in ("forget_Q_A_Prob", "extraction_strength")}
    passed = all(gap >= margin for gap in gaps.values())
    if not passed:
        main_process_print(
            f"Warning: the target model has not clearly memorised the forget set (gaps to the retain "
            f"model { {k: round(v, 3) for k, v in gaps.items()} }, want >= {margin}): fine-tune longer "
            "or at a higher learning rate, or the unlearning results say little."
        )
    return {"gaps": gaps, "margin": margin, "passed": passed}


def run_finetune(
    recipe: dict[str, Any],
    *,
    output_dir: PathLike = None,
    models_dir: PathLike = None,
    data_dir: PathLike = None,
    dry_run: bool = False,
    recipe_arg: str = "RECIPE",
    roles: tuple[str, ...] = ("target", "retain"),
) -> dict[str, str]:
    """`hf-unlearn finetune`: only the fine-tuning stages of a TOFU recipe (each cached). Returns role -> folder."""
    device = None if dry_run else join_process_group()  # before any config is built: it creates accelerate's state
    plan = parse_tofu_recipe(
        recipe, output_dir=output_dir, models_dir=models_dir, data_dir=data_dir, require_methods=False, dry_run=dry_run
    )
    check_tofu_inputs(plan, dry_run=dry_run, command="finetune")  # data, selections, model sources
    if dry_run:
        print(describe_plan(plan, "finetune", recipe_arg) + describe_data(plan))
        return {}
    if not plan.train_data:
        print("Nothing to fine-tune: the recipe gives both models (models.target / models.retain name_or_path).")
        return {}
    with run_prologue(
        plan,
        f"finetune {recipe_arg}",
        training_batches(plan, "finetune"),
        plan.models_dir / "finetune_results.json",
        {"task": "tofu-finetune", "settings": plan.settings()},
        ("finetune_results.json",),
        device=device,
        folders={"models folder": plan.models_dir},
        hub=False,
    ) as log:
        models = ensure_models(plan, log, device, roles=tuple(r for r in roles if r in plan.train_data))
        log.save(complete=True)
    for role, spec in models.items():
        main_process_print(f"{role} model: {spec.path}")
    return {role: spec.path for role, spec in models.items()}


def describe_data(plan: TofuRecipe) -> str:
    """For a dry run with a local TOFU folder: row counts of every selection and the separation checks (counts only).
    Hub data is not downloaded in a dry run."""
    if plan.data_dir is None or not Path(plan.data_dir).is_dir():
        where = "Hub" if plan.data_dir is None else f"{plan.data_dir} missing"
        return f"\n\nData: not loaded in a dry run ({where})."
    lines = ["", "", "Data:"]
    for role, selections in plan.train_data.items():
        lines.append(f"  {role} training rows: {len(select_rows(selections, plan.data_dir))}")
    for name, selections in plan.unlearn_data.items():
        lines.append(f"  unlearning {name} rows: {len(select_rows(selections, plan.data_dir))}")
    if plan.train_data:
        for role, seen in check_data_separation(plan).items():
            lines.append(
                f"  {role} model sees {seen['forget_seen']}/{seen['forget_total']} forget questions and "
                f"{seen['utility_seen']}/{seen['utility_total']} retain_perturbed questions"
            )
    return "\n".join(lines)


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _evaluate(
    plan: TofuRecipe,
    log: StageLog,
    name: str,
    spec: ModelSpec,
    out: Path,
    retain_logs: Path | None,
    samples: dict,
    device: str | None,
) -> dict[str, Any]:
    """The TOFU suite on one model (its cached stage reuses `out` when weights, data and settings hash the same)."""
    with log.stage(f"eval/{name}") as entry:
        model, tokenizer = load_model(spec, device)
        result = evaluate_tofu_stage(
            model,
            tokenizer,
            plan.evaluation,
            data_dir=plan.data_dir,
            retain_logs=retain_logs,
            output_dir=out,
            model_name=name,
        )
        entry.update(reused=bool(result.get("reused")), compute_seconds=result["timing_s"]["total"], path=str(out))
        del model
    _free()
    items = result.pop("items")
    counts = {"retain": plan.report.samples, "forget": plan.report.forget_samples}
    samples[name] = {
        split: [{key: item.get(key) for key in ("question", "answer", "generation")} for item in items[split][:count]]
        for split, count in counts.items()
    }
    return {key: result.get(key) for key in METRICS}


def load_attack_model(spec, device: str | None = None):
    """A model of the run as one plain model (a LoRA-unlearned one merged: quantization and relearning act on the
    weights), with its tokenizer."""
    model, tokenizer = load_model(spec, device)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.eval(), tokenizer


def _model_eval_dir(plan: TofuRecipe, role: str) -> Path:
    """The evaluation folder of the target or retain model (the retain one is every other model's reference)."""
    return plan.output_dir / "eval" / role
