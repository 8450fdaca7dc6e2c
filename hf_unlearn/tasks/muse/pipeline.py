"""MUSE end to end (`hf-unlearn run recipes/muse/...`): target and retain models (given or fine-tuned on raw text),
their MUSE evaluations (the retain model's Min-K AUC is every other model's PrivLeak reference), then each method's
unlearning and evaluation; with `protocol: scalability` one unlearning per `scal/forget_k` fold from the target, with
`protocol: sustainability` the folds `sust/forget_k` one after the other, each model evaluated.

Stages, each cached in its own folder with a fingerprint stamp:

    models/{target,retain}/                 fine-tuned models
    eval/{retain,target}/                   their evaluations (summary.json, items.json)
    methods/<label>[/<fold>]/model/         each unlearned model (safetensors)
    methods/<label>[/<fold>]/eval/          its evaluation
    results.json, table.md

Privacy: forget text never goes into the log, `results.json` or the table; the evaluations' `items.json` keep the
generations (so aggregates can be recomputed): keep `eval/` folders local.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

from datasets import Dataset

from ...data.pairing import pad_examples
from ...data.text import chunk_text_dataset
from ...evaluation.muse import evaluate_muse
from ...models import ensure_pad_token, load_model_and_tokenizer
from ...recipe import build_method_config
from ...runtime.cache import StageLog, cached_stage, commit_stage, fingerprint_settings, open_scratch
from ...runtime.distributed import is_main_process, main_process_print
from ...runtime.hashing import model_identity, sha256_json
from ...runtime.io import atomic_write_json, atomic_write_text
from ...runtime.launch import TrainingBatch, method_batches, training_batch
from ...runtime.versions import environment_versions
from .data import TextSelection, describe_text_selections, muse_eval_data, select_texts
from .recipe import MuseRecipe, training_arguments
from .report import muse_table

__all__ = ["RESULT_FILES", "run_stages", "training_batches", "unlearning_runs"]

RESULT_FILES = ("results.json", "table.md")


def training_batches(recipe: MuseRecipe) -> list[TrainingBatch]:
    from transformers import TrainingArguments

    from ...trainers import METHODS

    batches = [training_batch("finetune", recipe.finetune, TrainingArguments)] if recipe.train_data else []
    classes = {label: METHODS[spec["method"]][0] for label, spec in recipe.methods.items()}
    return batches + method_batches(recipe.unlearn, recipe.methods, classes, flags=True)


def unlearning_runs(recipe: MuseRecipe) -> list[tuple[str, list[TextSelection], str | None]]:
    """`(name, forget selections, the run it starts from)` of one method: `("", forget, None)` for the standard
    protocol; `scal_k` from the target (None) for scalability; `sust_k` from `sust_{k-1}` for sustainability."""
    if recipe.protocol == "standard":
        return [("", recipe.unlearn_data["forget"], None)]
    prefix = "scal" if recipe.protocol == "scalability" else "sust"
    runs, previous = [], None
    for k in recipe.folds:
        runs.append((f"{prefix}_{k}", [TextSelection(f"{prefix}/forget_{k}")], previous))
        previous = f"{prefix}_{k}" if recipe.protocol == "sustainability" else None
    return runs


def run_stages(recipe: MuseRecipe, log: StageLog, device: str | None) -> None:
    payload = log.payload
    payload.update(models={}, methods={})
    models = {role: _model_source(recipe, log, role, device) for role in recipe.roles}
    reference_auc = None
    for role in reversed(recipe.roles):  # the retain model first: its AUC is the PrivLeak reference
        summary = _evaluate(
            recipe, log, role, models[role], recipe.output_dir / "eval" / role, reference_auc, device, role == "retain"
        )
        payload["models"][role] = {"metrics": summary}
        if role == "retain":
            reference_auc = summary.get("privleak_auc")
    _write_table(recipe, log)
    for label, spec in recipe.methods.items():
        record: dict[str, Any] = {
            "method": spec["method"],
            "settings": {k: v for k, v in spec.items() if k != "method"},
            "runs": {},
        }
        payload["methods"][label] = record
        folders: dict[str | None, str] = {None: models["target"]}
        for name, forget, start in unlearning_runs(recipe):
            where = recipe.output_dir / "methods" / label / name
            stage = f"{label}/{name}" if name else label
            folders[name], trained = _unlearn(recipe, log, stage, spec, folders[start], forget, where / "model", device)
            metrics = _evaluate(recipe, log, stage, folders[name], where / "eval", reference_auc, device)
            record["runs"][name or "forget"] = {
                "forget": describe_text_selections(forget),
                "unlearn_seconds": trained.get("seconds"),
                "unlearn_steps": trained.get("steps"),
                "metrics": metrics,
            }
            log.save(complete=False)
            _write_table(recipe, log)


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _load(path: str, device: str | None, dtype: str = "float32"):
    model, tokenizer = load_model_and_tokenizer(path, dtype=dtype, device=device)
    ensure_pad_token(tokenizer, pad_with_eos=True)
    return model, tokenizer


def _chunks(recipe: MuseRecipe, selections: list[TextSelection], tokenizer) -> Dataset:
    return chunk_text_dataset(select_texts(selections, recipe.corpus, recipe.data_dir), tokenizer, recipe.max_length)


def _model_source(recipe: MuseRecipe, log: StageLog, role: str, device: str | None) -> str:
    """The folder (or Hub id) of the target or retain model: given, or fine-tuned now / from the cache."""
    source = getattr(recipe.models, role)
    if source.train_data is None:
        return source.name_or_path
    base = recipe.models.base
    path = recipe.models_dir / role
    with log.stage(f"finetune/{role}") as entry:
        texts = select_texts(source.train_data, recipe.corpus, recipe.data_dir)
        fingerprint = {
            "base": base.identity(),
            "train_data": describe_text_selections(source.train_data),
            "texts_sha256": sha256_json(texts),
            "max_length": recipe.max_length,
            "finetune": fingerprint_settings(recipe.finetune),
            "versions": environment_versions(),
        }
        stamp = cached_stage(path, fingerprint, f"{role} model")
        entry["reused"] = stamp is not None
        if stamp is None:
            from transformers import Trainer

            scratch = open_scratch(path, fingerprint)
            model, tokenizer = _load(base.name_or_path, device, base.dtype)
            dataset = chunk_text_dataset(texts, tokenizer, recipe.max_length)
            main_process_print(
                f"Fine-tuning the {role} model on {describe_text_selections(source.train_data)} "
                f"({len(texts)} documents, {len(dataset)} chunks of {recipe.max_length} tokens)."
            )
            trainer = Trainer(
                model=model,
                args=training_arguments(recipe.finetune, scratch / "trainer"),
                train_dataset=dataset,
                data_collator=lambda rows: pad_examples(rows, tokenizer.pad_token_id),
            )
            tick = time.perf_counter()
            trainer.train()
            record = {"seconds": time.perf_counter() - tick, "steps": trainer.state.global_step, "chunks": len(dataset)}
            if is_main_process():
                model.save_pretrained(scratch, safe_serialization=True)
                tokenizer.save_pretrained(scratch)
                atomic_write_json(scratch / "train_log.json", trainer.state.log_history)  # numbers only
            stamp = commit_stage(scratch, path, fingerprint, record, drop=("trainer",))
            del trainer, model
            _free()
        entry.update(compute_seconds=stamp.get("seconds"), path=str(path))
    log.payload.setdefault("training", {})[role] = {k: stamp.get(k) for k in ("seconds", "steps", "chunks")}
    return str(path)


def _unlearn(
    recipe: MuseRecipe,
    log: StageLog,
    stage: str,
    spec: dict[str, Any],
    start: str,
    forget: list[TextSelection],
    path: Path,
    device: str | None,
) -> tuple[str, dict[str, Any]]:
    """Unlearn the model at `start` on `forget` with one method (cached by fingerprint); returns its folder."""
    from ...trainers import METHODS

    with log.stage(f"unlearn/{stage}") as entry:
        forget_texts = select_texts(forget, recipe.corpus, recipe.data_dir)
        retain_texts = select_texts(recipe.unlearn_data["retain"], recipe.corpus, recipe.data_dir)
        fingerprint = {
            "start": model_identity(start, dtype=recipe.dtype),
            "method": fingerprint_settings(spec, default_batch=None),
            "unlearn": fingerprint_settings(recipe.unlearn),
            "forget": describe_text_selections(forget),
            "retain": describe_text_selections(recipe.unlearn_data["retain"]),
            "texts_sha256": sha256_json([forget_texts, retain_texts]),
            "max_length": recipe.max_length,
            "versions": environment_versions(),
        }
        stamp = cached_stage(path, fingerprint, f"{stage} model")
        entry["reused"] = stamp is not None
        if stamp is None:
            scratch = open_scratch(path, fingerprint)
            model, tokenizer = _load(start, device, recipe.dtype)
            forget_set = chunk_text_dataset(forget_texts, tokenizer, recipe.max_length)
            retain_set = chunk_text_dataset(retain_texts, tokenizer, recipe.max_length)
            main_process_print(
                f"Unlearning with {stage} ({spec['method']}) on {describe_text_selections(forget)} "
                f"({len(forget_set)} chunks of {recipe.max_length} tokens)."
            )
            config = build_method_config(spec, recipe.unlearn, scratch / "trainer", where=f"methods.{stage}")
            tick = time.perf_counter()
            trainer = METHODS[spec["method"]][1](
                model, config, forget_dataset=forget_set, retain_dataset=retain_set, processing_class=tokenizer
            )
            trainer.train()
            record = {"seconds": time.perf_counter() - tick, "steps": trainer.state.global_step}
            trainer.save_model(str(scratch))
            if is_main_process():
                tokenizer.save_pretrained(scratch)
                atomic_write_json(scratch / "train_log.json", trainer.state.log_history)
            stamp = commit_stage(scratch, path, fingerprint, record, drop=("trainer",))
            del trainer, model
            _free()
        entry.update(compute_seconds=stamp.get("seconds"), path=str(path))
    return str(path), stamp


def _evaluate(
    recipe: MuseRecipe,
    log: StageLog,
    name: str,
    model_path: str,
    out: Path,
    reference_auc: float | None,
    device: str | None,
    is_reference: bool = False,
) -> dict[str, Any]:
    """The MUSE metrics (and the lm-eval tasks) of one model, cached in `out` (summary.json, items.json);
    `is_reference`: the retrained model, whose own Min-K AUC is its PrivLeak reference."""
    with log.stage(f"eval/{name}") as entry:
        data = muse_eval_data(recipe.corpus, recipe.data_dir, recipe.evaluation.metrics)
        fingerprint = {
            "model": model_identity(model_path, dtype=recipe.dtype),
            "evaluation": recipe.evaluation.settings(),
            "lm_eval": None if recipe.lm_eval is None else recipe.lm_eval.settings(),
            "data_sha256": sha256_json(data),
            "reference_auc": "itself" if is_reference else reference_auc,
            "versions": environment_versions(),
        }
        stamp = cached_stage(out, fingerprint, f"{name} evaluation")
        entry["reused"] = stamp is not None
        if stamp is None:
            scratch = open_scratch(out, fingerprint)
            model, tokenizer = _load(model_path, device, recipe.dtype)
            tick = time.perf_counter()
            result = (
                evaluate_muse(model, tokenizer, data, recipe.evaluation, reference_auc=reference_auc)
                if recipe.evaluation.metrics
                else {"summary": {}, "items": {}}
            )
            summary = result["summary"]
            if is_reference and "privleak_auc" in summary:  # the retrained model is its own reference: PrivLeak 0
                summary.update(privleak=0.0, privleak_reference_auc=summary["privleak_auc"], notices=[])
            if recipe.lm_eval is not None:
                from ...evaluation.lm_eval import evaluate_lm_eval

                summary["lm_eval"] = evaluate_lm_eval(model, tokenizer, recipe.lm_eval)
            summary["seconds"] = time.perf_counter() - tick
            if is_main_process():
                atomic_write_json(scratch / "summary.json", summary)
                atomic_write_json(scratch / "items.json", result["items"])  # generations: keep local
            stamp = commit_stage(scratch, out, fingerprint, {"seconds": summary["seconds"], "summary": summary})
            del model
            _free()
        entry.update(compute_seconds=stamp.get("seconds"), path=str(out))
    return stamp["summary"]


def _write_table(recipe: MuseRecipe, log: StageLog) -> None:
    if is_main_process():
        atomic_write_text(recipe.output_dir / "table.md", muse_table(log.payload) + "\n")
