"""TOFU end to end (`hf-unlearn run recipes/tofu/...`): target and retain models (given or fine-tuned), unlearning with
every method of the recipe, the TOFU suite (SPEC §3) on every model, and the IMU paper's Table 13 with forget_quality
and truth ratio, sample generations and a trade-off plot.

Stages, each cached in its own folder with a fingerprint stamp and resumable across sessions:

    models/{target,retain}/        fine-tuned models (`hf-unlearn finetune` runs just these)
    eval/{retain,target}/          their TOFU evaluations (the retain one is the reference of forget_quality/privleak)
    methods/<label>/model/         each unlearned model (safetensors; with `unlearn_lora`, the adapter only)
    methods/<label>/eval/          its TOFU evaluation
    results.json                   metrics and the wall time of every stage, rewritten after every stage
    table.md, samples.md, tradeoff.png

Privacy: forget-set text never goes into the log, `results.json`, model cards or the table. `samples.md` holds retain
questions, and forget questions only when the recipe opts in (`report.forget_samples > 0`; TOFU is public fictitious
data, a user's forget set is not). The evaluations' own `items.json` files keep per-item text and generations (so
aggregates can be recomputed): keep `eval/` folders local.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_utils import get_last_checkpoint

from ..data.tofu import tokenize_tofu
from ..evaluation.tofu import evaluate_tofu
from ..evaluation.results import sha256_json
from ..evaluation.runner import dist_info
from ..recipe import build_method_config
from ..reporting import format_tofu_samples, plot_tofu_tradeoff, tofu_table
from ..trainers import METHODS
from ..utils import atomic_write_json, join_process_group
from .finetune import check_data_separation, ensure_models, load_model
from .stages import (StageLog, cached_stage, commit_stage, is_main_process, open_scratch, per_step_settings,
                     write_model_card)
from .tofu_recipe import (
    ModelSpec, TofuPlan, build_lora_config, describe_plan, describe_selections, format_kwargs, parse_tofu_recipe,
    select_rows, versions,
)  # fmt: skip

__all__ = ["METRICS", "memorisation_check", "run_finetune", "run_tofu"]

# Kept in results.json (numbers and fixed notices only; per-item values stay in each evaluation's items.json).
METRICS = ["model_utility", "forget_quality", "forget_truth_ratio", "extraction_strength", "exact_memorization",
           "forget_Q_A_Prob", "forget_Q_A_ROUGE", "privleak", "mia_min_k", "mia_loss", "mia_zlib",
           "privleak_reference_auc", "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
           "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio", "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE",
           "wf_Truth_Ratio", "num_items", "notices"]  # fmt: skip
# The target must know the forget set far better than the retain model, or there is nothing to unlearn.
MEMORISATION_MARGIN = 0.2
PathLike = str | os.PathLike | None


def run_finetune(recipe: dict[str, Any], *, output_dir: PathLike = None, models_dir: PathLike = None,
                 data_dir: PathLike = None, dry_run: bool = False, recipe_arg: str = "RECIPE",
                 roles: tuple[str, ...] = ("target", "retain")) -> dict[str, str]:  # fmt: skip
    """`hf-unlearn finetune`: only the fine-tuning stages of a TOFU recipe (each cached). Returns role -> folder."""
    plan = parse_tofu_recipe(recipe, output_dir=output_dir, models_dir=models_dir, data_dir=data_dir,
                             require_methods=False, dry_run=dry_run)  # fmt: skip
    if dry_run:
        print(describe_plan(plan, "finetune", recipe_arg) + _describe_data(plan))
        return {}
    if not plan.train_data:
        print("Nothing to fine-tune: the recipe gives both models (models.target / models.retain name_or_path).")
        return {}
    log = StageLog(plan.models_dir / "finetune_results.json", {"task": "tofu-finetune", "settings": plan.settings()})
    device = _join_launch(plan, "finetune", recipe_arg)
    models = ensure_models(plan, log, device, roles=tuple(r for r in roles if r in plan.train_data))
    log.save(complete=True)
    for role, spec in models.items():
        print(f"{role} model: {spec.path}")
    return {role: spec.path for role, spec in models.items()}


def run_tofu(recipe: dict[str, Any], *, output_dir: PathLike = None, models_dir: PathLike = None,
             data_dir: PathLike = None, dry_run: bool = False, recipe_arg: str = "RECIPE") -> dict[str, Any] | None:
    """`hf-unlearn run` for `task: tofu`; returns the results (also in `output_dir/results.json`)."""
    plan = parse_tofu_recipe(recipe, output_dir=output_dir, models_dir=models_dir, data_dir=data_dir, dry_run=dry_run)
    if dry_run:
        print(describe_plan(plan, "run", recipe_arg) + _describe_data(plan))
        return None
    device = _join_launch(plan, "run", recipe_arg)
    payload: dict[str, Any] = {"task": "tofu", "settings": plan.settings(), "models": {}, "methods": {}, "checks": {},
                               "environment": {**versions(), "threads": torch.get_num_threads(),
                                               "device": device or "cpu"}}  # fmt: skip
    log = StageLog(plan.output_dir / "results.json", payload)
    models = ensure_models(plan, log, device)
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {}  # in memory only: becomes samples.md
    reference = plan.output_dir / "eval" / "retain"
    for role in ("retain", "target"):  # the retain model first: it is the reference of the others
        summary = _evaluate(plan, log, role, models[role], plan.output_dir / "eval" / role,
                            None if role == "retain" else reference, samples, device)  # fmt: skip
        payload["models"][role] = {"source": models[role].describe(), "metrics": summary}
    payload["checks"]["memorisation"] = memorisation_check(payload["models"]["target"]["metrics"],
                                                           payload["models"]["retain"]["metrics"])  # fmt: skip
    table = _write_reports(plan, log, samples)
    for label, spec in plan.specs.items():
        unlearned, record = _unlearn(plan, log, label, spec, models["target"], device)
        payload["methods"][label] = {"method": spec["method"],
                                     "settings": {k: v for k, v in spec.items() if k != "method"},
                                     "model": unlearned.describe(), "unlearn_seconds": record.get("seconds"),
                                     "unlearn_steps": record.get("steps")}  # fmt: skip
        payload["methods"][label]["metrics"] = _evaluate(plan, log, label, unlearned,
                                                         plan.output_dir / "methods" / label / "eval", reference,
                                                         samples, device)  # fmt: skip
        table = _write_reports(plan, log, samples)  # an interrupted run keeps the table of what it finished
    log.save(complete=True)
    if is_main_process():
        stages = payload["stages"]
        print(f"{table}\n\nWrote {plan.output_dir / 'results.json'}, table.md, samples.md and tradeoff.png "
              f"({payload['total_seconds']:.0f} s this run; {sum(1 for s in stages.values() if s['reused'])} of "
              f"{len(stages)} stages reused).")  # fmt: skip
    return payload


def memorisation_check(target: dict[str, Any], retain: dict[str, Any], margin: float = MEMORISATION_MARGIN) -> dict:
    """Did fine-tuning memorise the forget set? The target's forget Q_A prob and extraction strength must exceed the
    retain model's by `margin` (absolute); reference models (SPEC §3): 0.885 vs 0.127 and 0.727 vs 0.063."""
    gaps = {key: target[key] - retain[key] for key in ("forget_Q_A_Prob", "extraction_strength")}
    passed = all(gap >= margin for gap in gaps.values())
    if not passed:
        print(f"Warning: the target model has not clearly memorised the forget set (gaps to the retain model "
              f"{ {k: round(v, 3) for k, v in gaps.items()} }, want >= {margin}): fine-tune longer or at a higher "
              f"learning rate, or the unlearning results say little.", flush=True)  # fmt: skip
    return {"gaps": gaps, "margin": margin, "passed": passed}


# ------------------------------------------------------------------------------------------------ stages


def _describe_data(plan: TofuPlan) -> str:
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
            lines.append(f"  {role} model sees {seen['forget_seen']}/{seen['forget_total']} forget questions and "
                         f"{seen['utility_seen']}/{seen['utility_total']} retain_perturbed questions")  # fmt: skip
    return "\n".join(lines)


def _join_launch(plan: TofuPlan, command: str, recipe_arg: str) -> str | None:
    """Join the process group and check it has the recipe's number of processes: batch sizes are per process, so
    any other count would silently train with another batch (and reuse nothing cached)."""
    device = join_process_group()
    wanted, launched = plan.launch["num_processes"], dist_info()[1]
    if launched != wanted:
        launcher = f"torchrun --nproc_per_node {wanted} -m hf_unlearn.cli" if wanted > 1 else "hf-unlearn"
        raise ValueError(f"The recipe's batch sizes are per process for launch.num_processes = {wanted}, but "
                         f"{launched} process(es) were launched: run `{launcher} {command} {recipe_arg}` (or "
                         f"accelerate launch --num_processes {wanted} on GPUs), or change launch.num_processes and the "
                         f"batch sizes.")  # fmt: skip
    return device


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _evaluate(plan: TofuPlan, log: StageLog, name: str, spec: ModelSpec, out: Path, retain_logs: Path | None,
              samples: dict, device: str | None) -> dict[str, Any]:  # fmt: skip
    """The TOFU suite on one model (evaluate_tofu reuses `out` when weights, data and settings hash the same)."""
    ev = plan.evaluation
    with log.stage(f"eval/{name}") as entry:
        model, tokenizer = load_model(spec, device)
        result = evaluate_tofu(
            model, tokenizer, forget_split=plan.forget_split, data_dir=plan.data_dir, retain_logs=retain_logs,
            output_dir=out, batch_size=ev["batch_size"], generation_batch_size=ev["generation_batch_size"],
            max_new_tokens=ev["max_new_tokens"], max_items=ev["max_items"], split_max_items=ev["split_max_items"],
            es_reference_floor=ev["es_reference_floor"], model_name=name, **format_kwargs(plan.formatting),
        )  # fmt: skip
        entry.update(reused=bool(result.get("reused")), compute_seconds=result["timing_s"]["total"], path=str(out))
        del model
    _free()
    items = result.pop("items")
    counts = {"retain": plan.report["samples"], "forget": plan.report["forget_samples"]}
    samples[name] = {split: [{key: item.get(key) for key in ("question", "answer", "generation")}
                             for item in items[split][:count]] for split, count in counts.items()}  # fmt: skip
    return {key: result.get(key) for key in METRICS}


def _unlearn(plan: TofuPlan, log: StageLog, label: str, spec: dict[str, Any], target: ModelSpec,
             device: str | None) -> tuple[ModelSpec, dict[str, Any]]:  # fmt: skip
    """Unlearn the target with one method (cached by fingerprint); returns where to load the result from."""
    path = plan.output_dir / "methods" / label / "model"
    result_spec = ModelSpec(target.name_or_path, target.gguf_file, target.dtype, target.trust_remote_code,
                            adapter=str(path)) if plan.unlearn_lora else ModelSpec(str(path))  # fmt: skip
    with log.stage(f"unlearn/{label}") as entry:
        forget_rows = select_rows(plan.unlearn_data["forget"], plan.data_dir)
        retain_rows = select_rows(plan.unlearn_data["retain"], plan.data_dir)
        fingerprint = {"target": target.identity(), "method": per_step_settings(spec, default_batch=None),
                       "unlearn": per_step_settings(plan.unlearn),
                       "unlearn_lora": plan.unlearn_lora, "unlearn_data": plan.unlearn_data,
                       "data_sha256": sha256_json([forget_rows.to_list(), retain_rows.to_list()]),
                       "formatting": plan.formatting, "save_dtype": plan.save_dtype, "versions": versions()}  # fmt: skip
        stamp = cached_stage(path, fingerprint, f"{label} model")
        entry["reused"] = stamp is not None
        if stamp is None:
            scratch = open_scratch(path, fingerprint)
            record = _train_method(plan, label, spec, target, forget_rows, retain_rows, scratch, device)
            write_model_card(scratch, f"TOFU target model unlearned with {label}", {
                "method": spec["method"], "method settings": {k: v for k, v in spec.items() if k != "method"},
                "shared settings": plan.unlearn, "LoRA": plan.unlearn_lora or "none (full model)",
                "target model": target.describe(), "forget data": describe_selections(plan.unlearn_data["forget"]),
                "retain data": describe_selections(plan.unlearn_data["retain"]), "record": record})  # fmt: skip
            stamp = commit_stage(scratch, path, fingerprint, record)
        entry.update(compute_seconds=stamp.get("seconds"), path=str(path))
    return result_spec, stamp


def _train_method(plan: TofuPlan, label: str, spec: dict[str, Any], target: ModelSpec, forget_rows, retain_rows,
                  scratch: Path, device: str | None) -> dict[str, Any]:  # fmt: skip
    print(f"Unlearning with {label} ({spec['method']}) on {describe_selections(plan.unlearn_data['forget'])} "
          f"({len(forget_rows)} rows).", flush=True)  # fmt: skip
    model, tokenizer = load_model(target, device)
    fmt = format_kwargs(plan.formatting)
    forget, retain = tokenize_tofu(forget_rows, tokenizer, **fmt), tokenize_tofu(retain_rows, tokenizer, **fmt)
    config = build_method_config(spec, plan.unlearn, scratch / "trainer")
    checkpoint = get_last_checkpoint(config.output_dir) if Path(config.output_dir).is_dir() else None
    if checkpoint:
        print(f"Resuming {label} from {checkpoint}.", flush=True)
    # Run time as in the paper's Table 13: everything the method needs, its one-off passes included (NPO's
    # reference log-probs in the constructor, IMU's influence scores in train()); loading and saving excluded.
    tick = time.perf_counter()
    trainer = METHODS[spec["method"]][1](model, config, forget_dataset=forget, retain_dataset=retain,
                                         processing_class=tokenizer,
                                         peft_config=build_lora_config(plan.unlearn_lora, "unlearn_lora"))  # fmt: skip
    trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - tick
    if plan.save_dtype is not None:  # e.g. bf16 to halve the disk of 3B models; evaluation then scores those weights
        trainer.model.to(getattr(torch, plan.save_dtype))
    trainer.save_model(str(scratch))  # safetensors; a PEFT model saves its adapter only
    if is_main_process():
        atomic_write_json(scratch / "train_log.json", trainer.state.log_history)  # numbers only
    record = {"seconds": seconds, "steps": trainer.state.global_step, "forget_rows": len(forget)}
    del trainer, model
    _free()
    return record


def _write_reports(plan: TofuPlan, log: StageLog, samples: dict) -> str | None:
    """results.json with every metric so far (`complete: false`), then table.md, samples.md and tradeoff.png (main
    process only); returns the table."""
    log.save(complete=False)
    if not is_main_process():
        return None
    table = tofu_table(log.payload)
    (plan.output_dir / "table.md").write_text(table + "\n")
    labels = ["target", "retain", *plan.specs]
    text = format_tofu_samples(samples, labels, plan.report["forget_samples"] > 0)
    (plan.output_dir / "samples.md").write_text(text)
    plot_tofu_tradeoff(log.payload, plan.output_dir / "tradeoff.png")
    return table
