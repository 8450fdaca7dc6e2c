"""TOFU end to end (`hf-unlearn run recipes/tofu/...`): target and retain models (given or fine-tuned), unlearning with
every method of the recipe, the TOFU suite (`docs/metrics.md#tofu`) on every model, and the IMU paper's Table 13 with forget_quality
and truth ratio, sample generations and a trade-off plot.

Stages, each cached in its own folder with a fingerprint stamp and resumable across sessions:

    models/{target,retain}/        fine-tuned models (`hf-unlearn finetune` runs just these)
    eval/{retain,target}/          their TOFU evaluations (the retain one is the reference of forget_quality/privleak)
    methods/<label>/model/         each unlearned model (safetensors; with `unlearn_lora`, the adapter only)
    methods/<label>/eval/          its TOFU evaluation
    methods/<label>/hub/           with push_to_hub: what is pushed, written after the evaluation (`publish.py`)
    results.json                   metrics and the wall time of every stage, rewritten after every stage
    table.md, samples.md, tradeoff.png

Privacy: forget-set text never goes into the log, `results.json`, model cards or the table. `samples.md` holds retain
questions, and forget questions only when the recipe opts in (`report.forget_samples > 0`; TOFU is public fictitious
data, a user's forget set is not). The evaluations' own `items.json` files keep per-item text and generations (so
aggregates can be recomputed): keep `eval/` folders local.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import time
from pathlib import Path
from typing import Any

import torch

from ...callbacks import StopAtTargetCallback
from ...data.chat import tokenize_dataset
from ...evaluation.callback import trajectory_record
from ...evaluation.tofu import MAIN_METRICS, TEACHER_FORCED_UTILITY, UTILITY_COMPONENTS, TofuEvalCallback
from ...hub import write_model_card
from ...recipe import build_method_config
from ...reporting import plot_influence_weights
from ...runtime.cache import (
    StageLog,
    cached_stage,
    commit_stage,
    fingerprint_settings,
    open_scratch,
    resume_checkpoint,
)
from ...runtime.distributed import is_main_process, main_process_print
from ...runtime.hashing import sha256_json
from ...runtime.io import atomic_write_json, atomic_write_text
from ...runtime.launch import TrainingBatch, method_batches, training_batch
from ...runtime.versions import environment_versions
from ...trainers import METHODS
from .data import describe_selections, select_rows, selections_json
from .eval_stage import evaluate_tofu_stage
from .finetune import check_data_separation, ensure_models, load_model
from .publish import publish, unlearned_card_info
from .recipe import ModelSpec, TofuRecipe, build_lora_config
from .report import format_tofu_samples, plot_tofu_tradeoff, tofu_table

__all__ = [
    "METRICS",
    "RESULT_FILES",
    "describe_data",
    "load_attack_model",
    "memorisation_check",
    "run_stages",
    "training_batches",
    "write_reports",
]

# What one run writes at the top of its output folder; an earlier run's copies move to `previous/` when it starts.
RESULT_FILES = ("results.json", "table.md", "samples.md", "tradeoff.png")

# Kept in results.json (numbers and fixed notices only; per-item values stay in each evaluation's items.json).
METRICS = [*MAIN_METRICS, "privleak_reference_auc", *UTILITY_COMPONENTS, TEACHER_FORCED_UTILITY, "num_items", "notices"]
# The target must know the forget set far better than the retain model, or there is nothing to unlearn.
MEMORISATION_MARGIN = 0.2
PathLike = str | os.PathLike | None


def run_stages(plan: TofuRecipe, log: StageLog, samples: dict, device: str | None) -> None:
    """Every stage of a TOFU run: target and retain models (given or fine-tuned), their evaluations, then each method's
    unlearning and evaluation, metrics added to `log.payload` and the reports rewritten after each; `samples` collects
    the generations shown in samples.md."""
    payload = log.payload
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
    write_reports(plan, log, samples)
    attacks = _attack_controls(plan, log, models, device) if plan.attacks is not None else None
    for label, spec in plan.methods.items():
        unlearned, record = _unlearn(plan, log, label, spec, models["target"], device)
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
        write_reports(plan, log, samples)  # an interrupted run keeps the table of what it finished


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


# ------------------------------------------------------------------------------------------------ stages


def training_batches(plan: TofuRecipe, command: str) -> list[TrainingBatch]:
    """The batch of every training stage `command` runs (for the process-count check): the fine-tune when the recipe
    fine-tunes, the shared `unlearn` settings and each method that sets its own batch (`run` only)."""
    from trl import SFTConfig

    batches = []
    if plan.train_data:
        batches.append(training_batch("finetune", plan.finetune, SFTConfig, flags=command == "finetune"))
    if command == "run":
        classes = {label: METHODS[spec["method"]][0] for label, spec in plan.methods.items()}
        batches += method_batches(plan.unlearn, plan.methods, classes, flags=True)
    return batches


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


def _unlearn(
    plan: TofuRecipe, log: StageLog, label: str, spec: dict[str, Any], target: ModelSpec, device: str | None
) -> tuple[ModelSpec, dict[str, Any]]:
    """Unlearn the target with one method (cached by fingerprint); returns where to load the result from."""
    path = plan.output_dir / "methods" / label / "model"
    result_spec = (
        ModelSpec(target.name_or_path, target.gguf_file, target.dtype, target.trust_remote_code, adapter=str(path))
        if plan.unlearn_lora
        else ModelSpec(str(path))
    )
    with log.stage(f"unlearn/{label}") as entry:
        forget_rows = select_rows(plan.unlearn_data["forget"], plan.data_dir)
        retain_rows = select_rows(plan.unlearn_data["retain"], plan.data_dir)
        fingerprint = {
            "target": target.identity(),
            "method": fingerprint_settings(spec, default_batch=None),
            "unlearn": fingerprint_settings(plan.unlearn),
            "unlearn_lora": plan.unlearn_lora,
            "unlearn_data": {k: selections_json(v) for k, v in plan.unlearn_data.items()},
            "data_sha256": sha256_json([forget_rows.to_list(), retain_rows.to_list()]),
            "formatting": plan.formatting.formatting(),
            "save_dtype": plan.save_dtype,
            "versions": environment_versions(),
        }
        if plan.trajectory is not None:  # stop_at changes the model; the history is part of the stage's record
            fingerprint["trajectory"] = dataclasses.asdict(plan.trajectory)
        stamp = cached_stage(path, fingerprint, f"{label} model")
        entry["reused"] = stamp is not None
        if stamp is None:
            scratch = open_scratch(path, fingerprint)
            record = _train_method(plan, label, spec, target, forget_rows, retain_rows, scratch, device)
            if is_main_process():  # PEFT's card (an adapter) keeps its metadata
                artifact = "adapter" if plan.unlearn_lora else "full"
                write_model_card(scratch, unlearned_card_info(plan, label, spec, target, record, artifact=artifact))
            stamp = commit_stage(scratch, path, fingerprint, record)
        entry.update(compute_seconds=stamp.get("seconds"), path=str(path))
    return result_spec, stamp


def _train_method(
    plan: TofuRecipe,
    label: str,
    spec: dict[str, Any],
    target: ModelSpec,
    forget_rows,
    retain_rows,
    scratch: Path,
    device: str | None,
) -> dict[str, Any]:
    main_process_print(
        f"Unlearning with {label} ({spec['method']}) on "
        f"{describe_selections(plan.unlearn_data['forget'])} ({len(forget_rows)} rows)."
    )
    model, tokenizer = load_model(target, device)
    fmt = plan.formatting.chat_format().kwargs()
    forget, retain = tokenize_dataset(forget_rows, tokenizer, **fmt), tokenize_dataset(retain_rows, tokenizer, **fmt)
    shared, callbacks, eval_dataset = plan.unlearn, [], None
    if plan.trajectory is not None:
        shared, callbacks, eval_dataset = _trajectory(plan, forget, retain)
    config = build_method_config(spec, shared, scratch / "trainer", where=f"methods.{label}")
    checkpoint = resume_checkpoint(config.output_dir, label)
    # Run time as in the paper's Table 13: everything the method needs, its one-off passes included (NPO's
    # reference log-probs in the constructor, IMU's influence scores in train()); loading and saving excluded.
    tick = time.perf_counter()
    trainer = METHODS[spec["method"]][1](
        model,
        config,
        forget_dataset=forget,
        retain_dataset=retain,
        processing_class=tokenizer,
        peft_config=build_lora_config(plan.unlearn_lora, "unlearn_lora"),
        eval_dataset=eval_dataset,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - tick
    if getattr(trainer, "sample_weights", None) is not None and is_main_process():  # IMU: the weight histogram
        plot_influence_weights(trainer.scores, trainer.sample_weights, scratch / "influence_weights.png")
    if plan.save_dtype is not None:  # e.g. bf16 to halve the disk of 3B models; evaluation then scores those weights
        trainer.model.to(getattr(torch, plan.save_dtype))
    trainer.save_model(str(scratch))  # safetensors; a PEFT model saves its adapter only
    if is_main_process():
        atomic_write_json(scratch / "train_log.json", trainer.state.log_history)  # numbers only
    record = {"seconds": seconds, "steps": trainer.state.global_step, "forget_rows": len(forget)}
    # The trajectory: metrics at each evaluation, and where a stop_at target stopped it.
    record.update(trajectory_record(callbacks))
    del trainer, model
    _free()
    return record


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


def _trajectory(plan: TofuRecipe, forget, retain) -> tuple[dict[str, Any], list, dict]:
    """Trainer settings, callbacks and loss datasets for the cheap evaluations during unlearning (`trajectory:`)."""
    trajectory = plan.trajectory
    shared = {**plan.unlearn, "eval_strategy": "steps", "eval_steps": trajectory.eval_steps, "eval_on_start": True}
    callbacks = [
        TofuEvalCallback(
            trajectory.eval_arguments(plan.evaluation),
            data_dir=plan.data_dir,
            retain_logs=_model_eval_dir(plan, "retain"),
        )
    ]
    if trajectory.stop_at is not None:
        callbacks.append(StopAtTargetCallback(trajectory.stop_at))
    # Forget and retain NLL on the same first items (the Trainer's own eval loss), not on the whole sets.
    n_forget, n_retain = trajectory.max_forget_items, trajectory.max_utility_items
    eval_dataset = {
        "forget": forget.select(range(min(len(forget), n_forget or len(forget)))),
        "retain": retain.select(range(min(len(retain), n_retain or len(retain)))),
    }
    return shared, callbacks, eval_dataset


def write_reports(plan: TofuRecipe, log: StageLog, samples: dict) -> str | None:
    """table.md, samples.md and tradeoff.png of every model so far (main process only); returns the table."""
    if not is_main_process():
        return None
    table = tofu_table(log.payload)
    if plan.attacks is not None:
        from .attacks import tofu_attacks_table

        attacks = tofu_attacks_table(log.payload)
        table += "\n\n" + attacks if attacks else ""
    atomic_write_text(plan.output_dir / "table.md", table + "\n")
    labels = ["target", "retain", *plan.methods]
    atomic_write_text(
        plan.output_dir / "samples.md", format_tofu_samples(samples, labels, plan.report.forget_samples > 0)
    )
    plot_tofu_tradeoff(log.payload, plan.output_dir / "tradeoff.png")
    return table
