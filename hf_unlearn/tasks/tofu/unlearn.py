"""Unlearning the TOFU target with one method of the recipe, cached per method in `methods/<label>/model/`.

The stage's fingerprint holds the target's identity (the content hash of its files), the method's and the shared
`unlearn` settings (`runtime.cache.fingerprint_settings`: what changes the result only), the unlearning rows and their
hash, the formatting, the saved dtype and the library versions; with `trajectory:`, its settings (`stop_at` changes the
model). The method's trainer (`hf_unlearn.trainers.METHODS`) trains on the recipe's forget and retain selections,
tokenized with the evaluation's formatting; a run interrupted mid-training resumes from its last checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ...callbacks import StopAtTargetCallback
from ...data.chat import tokenize_dataset
from ...evaluation.callback import trajectory_record
from ...evaluation.tofu import TofuEvalCallback
from ...hub import write_model_card
from ...recipe import build_method_config
from ...reporting import plot_influence_weights
from ...runtime.cache import StageLog, cached_stage, commit_stage, fingerprint_settings, open_scratch, resume_checkpoint
from ...runtime.distributed import is_main_process, main_process_print
from ...runtime.hashing import sha256_json
from ...runtime.io import atomic_write_json
from ...runtime.versions import environment_versions
from ...trainers import METHODS
from .data import describe_selections, select_rows, selections_json
from .finetune import load_model
from .publish import unlearned_card_info
from .recipe import ModelSpec, TofuRecipe, build_lora_config

__all__ = ["unlearn_method"]


def unlearn_method(
    plan: TofuRecipe,
    log: StageLog,
    label: str,
    spec: dict[str, Any],
    target: ModelSpec,
    reference: Path,
    device: str | None,
) -> tuple[ModelSpec, dict[str, Any]]:
    """Unlearn the target with the method `label` of the recipe (`spec`: its settings), in the stage
    `unlearn/<label>` of `log`; returns where to load the unlearned model from and the stage's record (seconds,
    steps; with `trajectory:`, the history). `reference`: the retain model's evaluation folder, the reference of the
    trajectory's forget quality."""
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
            fingerprint["trajectory"] = plan.trajectory.model_settings()
        stamp = cached_stage(path, fingerprint, f"{label} model")
        entry["reused"] = stamp is not None
        if stamp is None:
            scratch = open_scratch(path, fingerprint)
            record = _train_method(plan, label, spec, target, forget_rows, retain_rows, scratch, reference, device)
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
    reference: Path,
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
        shared, callbacks, eval_dataset = _trajectory(plan, forget, retain, reference)
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
    return record


def _trajectory(plan: TofuRecipe, forget, retain, reference: Path) -> tuple[dict[str, Any], list, dict]:
    """Trainer settings, callbacks and loss datasets for the cheap evaluations during unlearning (`trajectory:`)."""
    trajectory = plan.trajectory
    shared = {**plan.unlearn, "eval_strategy": "steps", "eval_steps": trajectory.eval_steps, "eval_on_start": True}
    callbacks = [
        TofuEvalCallback(trajectory.eval_arguments(plan.evaluation), data_dir=plan.data_dir, retain_logs=reference)
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
