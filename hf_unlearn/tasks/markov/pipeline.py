"""The synthetic Markov-chain benchmark end to end: data, original and retrained GPT-2 (cached stages), unlearning
with every method of the recipe, metrics after every step, the table and the trade-off plot.

Under `torchrun` / `accelerate launch` every training runs data-parallel (the recipe's batch sizes are per process,
`launch.num_processes` says for how many); every process evaluates the same models alike, and only the main process
writes, prints and saves."""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from datasets import concatenate_datasets

from ...data.pairing import pad_examples
from ...recipe import build_method_config
from ...reporting import plot_influence_weights
from ...runtime.cache import cached_stage, commit_stage, fingerprint_settings, open_scratch, retire_previous_results
from ...runtime.distributed import is_main_process, main_process_print, num_processes, require_num_processes
from ...runtime.io import atomic_write_json, check_writable_folder
from ...runtime.launch import method_batches, training_batch
from ...runtime.lock import hold_output_lock
from ...runtime.versions import environment_versions
from .data import make_markov_datasets
from .evaluation import MarkovEvalCallback, MarkovEvaluator
from .publish import check_hub, publish
from .recipe import ORIGINAL_TRAINING_DATA, MarkovRecipe, gpt2_config, method_original, training_arguments
from .report import markov_table, plot_markov_tradeoff

__all__ = ["RESULT_FILES", "run_markov"]

# What one run writes at the top of its output folder; an earlier run's copies move to `previous/` when it starts.
RESULT_FILES = ("results.json", "tradeoff.png")


def run_markov(recipe: MarkovRecipe, recipe_arg: str = "RECIPE") -> dict[str, Any]:
    """Run a parsed Markov recipe; writes `results.json` and `tradeoff.png` into its output directory."""
    from transformers import TrainingArguments

    from ...trainers import METHODS

    classes = {label: METHODS[spec["method"]][0] for label, spec in recipe.methods.items()}
    batches = [training_batch("train", recipe.train_settings, TrainingArguments)]
    batches += method_batches(recipe.shared_unlearn, recipe.methods, classes, flags=True)
    require_num_processes(recipe.launch.num_processes, f"run {recipe_arg}", batches)
    output_dir = Path(recipe.output_dir)
    check_hub(recipe)  # before anything trains: can the pushes happen? (one line when not)
    if is_main_process():
        check_writable_folder(output_dir)
        check_writable_folder(recipe.models_path, "models folder")
    with hold_output_lock(output_dir, recipe.models_path):
        # The old results go before any work: an interrupted run must not leave them looking like its own.
        retire_previous_results(output_dir, RESULT_FILES)
        if is_main_process():
            atomic_write_json(
                output_dir / "results.json", {"task": "markov", "settings": recipe.settings(), "complete": False}
            )
        return _run_markov(recipe, output_dir)


def _run_markov(recipe: MarkovRecipe, output_dir: Path) -> dict[str, Any]:
    from ...trainers import METHODS

    started = time.perf_counter()
    data = make_markov_datasets(recipe.data, seed=recipe.seed)
    max_length = max(len(data[f"{name}_train"][0]["input_ids"]) for name in ("retain", "forget1", "forget2"))
    pad_token_id = gpt2_config(recipe.model_settings, max_length).pad_token_id

    timings: dict[str, float] = {}
    models, training = {}, {}
    original_chains = ORIGINAL_TRAINING_DATA[recipe.original_training_data]
    stages = [("original", original_chains, None), ("retrained", ["retain"], None)]
    if recipe.original_gradient_restriction is not None:  # IAU's training phase: ℓ + α‖∇_θ ℓ‖
        stages.append(("original_gr", original_chains, recipe.original_gradient_restriction))
    for name, chains, restriction in stages:
        tick = time.perf_counter()
        models[name], training[name] = _train_or_load(
            recipe, recipe.models_path / name, chains, data, max_length, restriction
        )
        timings[f"{name}_seconds"] = time.perf_counter() - tick

    test_sets = {name: data[f"{name}_test"] for name in ("retain", "forget1", "forget2")}
    evaluate = {
        "leakage": recipe.data.leakage,
        "num_states": recipe.data.num_states,
        "batch_size": recipe.evaluation.batch_size,
    }
    evaluator = MarkovEvaluator(test_sets, models["retrained"], pad_token_id, **evaluate)
    trajectory_evaluator = evaluator
    if recipe.evaluation.trajectory_examples is not None:
        subsets = {
            name: split.select(range(min(len(split), recipe.evaluation.trajectory_examples)))
            for name, split in test_sets.items()
        }
        trajectory_evaluator = MarkovEvaluator(subsets, models["retrained"], pad_token_id, **evaluate)
    results = {name: evaluator(models[name]) for name in models}
    results["training"] = training  # seconds and steps of each model's training (from the cache when reused)
    results["methods"] = {}
    forget_train = concatenate_datasets([data["forget1_train"], data["forget2_train"]])

    def payload(complete: bool) -> dict[str, Any]:
        return {
            "task": "markov",
            "settings": recipe.settings(),
            **results,
            "timings": timings,
            "environment": {**environment_versions(), "threads": torch.get_num_threads(), "processes": num_processes()},
            "complete": complete,
        }

    for label, spec in recipe.methods.items():
        main_process_print(f"Unlearning with {label}")
        original, config_spec = method_original(spec)
        config = build_method_config(config_spec, recipe.shared_unlearn, output_dir / "methods" / label)
        callback = MarkovEvalCallback(trajectory_evaluator)
        model = copy.deepcopy(models["original_gr" if original == "gradient_restricted" else "original"])
        model.config.pad_token_id = pad_token_id
        trainer = METHODS[spec["method"]][1](
            model, config, forget_dataset=forget_train, retain_dataset=data["retain_train"], callbacks=[callback]
        )
        tick = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - tick
        if getattr(trainer, "sample_weights", None) is not None and is_main_process():  # IMU: a histogram
            plot_influence_weights(
                trainer.scores, trainer.sample_weights, Path(config.output_dir) / "influence_weights.png"
            )
        results["methods"][label] = {
            **evaluator(model),
            "method": spec["method"],
            "original": original,
            "settings": {key: value for key, value in config_spec.items() if key != "method"},
            # Unlearning time alone: the per-step evaluation of the trade-off curve is measured and subtracted.
            "unlearn_seconds": wall - callback.seconds,
            "history": callback.history,
            "steps": trainer.state.global_step,
        }
        if getattr(trainer, "stop_history", None):  # MU-Mis with δ: every check of its stopping rule
            results["methods"][label]["stop_history"] = trainer.stop_history
        if label in recipe.hub:  # after the evaluation: the card carries its numbers
            rows = {"forget": len(forget_train), "retain": len(data["retain_train"])}
            results["methods"][label]["hub"] = publish(
                recipe, recipe.hub[label], trainer, models["original"], results, rows
            )
        # Written after every method, so an interrupted run keeps what it finished (marked incomplete).
        if is_main_process():
            atomic_write_json(output_dir / "results.json", payload(complete=False))
    timings["total_seconds"] = time.perf_counter() - started
    final = payload(complete=True)
    if is_main_process():
        atomic_write_json(output_dir / "results.json", final)
        plot_markov_tradeoff(final, output_dir / "tradeoff.png")
        print(markov_table(final))
        print(
            f"\nWrote {output_dir / 'results.json'} and {output_dir / 'tradeoff.png'} "
            f"({timings['total_seconds']:.0f} s in all).",
            flush=True,
        )
    return final


def _train_or_load(recipe: MarkovRecipe, path: Path, chains: list[str], data, max_length: int, restriction=None):
    """The model trained on `chains` (with the gradient-restricted loss when `restriction` is given) and its training
    record: from the stage cache when data, model, training settings and library versions match, else trained now
    (in a scratch folder swapped in when complete)."""
    from transformers import GPT2LMHeadModel, Trainer

    from ...trainers.gradient_restriction import GradientRestrictionTrainer

    fingerprint = {
        "model": recipe.model_settings,
        "max_length": max_length,
        "data": recipe.settings()["data"],
        "train": fingerprint_settings(recipe.train_settings),  # 128 x 1 process and 64 x 2 share a model
        "chains": chains,
        "versions": environment_versions(),
    }
    if restriction is not None:  # only then: the plain models keep their fingerprints (and caches)
        fingerprint["gradient_restriction"] = dataclasses.asdict(restriction)
    stamp = cached_stage(path, fingerprint, f"{path.name} model")
    if stamp is not None:
        return GPT2LMHeadModel.from_pretrained(path, use_safetensors=True), _training_record(stamp)
    train_set = concatenate_datasets([data[f"{chain}_train"] for chain in chains])
    main_process_print(f"Training the {path.name} model on {len(train_set)} sequences.")
    scratch = open_scratch(path, fingerprint)
    config = gpt2_config(recipe.model_settings, max_length)
    torch.manual_seed(recipe.train_settings["seed"])
    model = GPT2LMHeadModel(config)
    tick = time.perf_counter()
    trainer_class, extra = (
        (Trainer, {}) if restriction is None else (GradientRestrictionTrainer, {"gradient_restriction": restriction})
    )
    trainer = trainer_class(
        model=model,
        args=training_arguments(recipe.train_settings, scratch / "trainer"),
        train_dataset=train_set,
        data_collator=lambda rows: pad_examples(rows, config.pad_token_id),
        **extra,
    )
    trainer.train()
    record = {"seconds": time.perf_counter() - tick, "steps": trainer.state.global_step}
    if is_main_process():  # the processes hold the same weights; one writes them, commit_stage waits for it
        model.save_pretrained(scratch, safe_serialization=True)
    commit_stage(scratch, path, fingerprint, record, drop=("trainer",))
    return model, record


def _training_record(stamp: dict[str, Any]) -> dict[str, Any]:
    return {"seconds": stamp.get("seconds"), "steps": stamp.get("steps"), "cached": True}
