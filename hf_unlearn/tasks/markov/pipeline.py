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
from ...evaluation.callback import trajectory_record
from ...recipe import build_method_config
from ...reporting import plot_influence_weights
from ...runtime.cache import StageLog, cached_stage, commit_stage, fingerprint_settings, open_scratch
from ...runtime.distributed import is_main_process, main_process_print, num_processes
from ...runtime.versions import environment_versions
from .data import make_markov_datasets
from .evaluation import MarkovEvalCallback, MarkovEvaluator
from .publish import publish
from .recipe import ORIGINAL_TRAINING_DATA, MarkovRecipe, gpt2_config, method_original, training_arguments

__all__ = ["run_stages"]


def run_stages(recipe: MarkovRecipe, log: StageLog) -> None:
    """Every stage of a Markov run: the original (and, when a method unlearns it, the gradient-restricted original)
    and retrained models through the stage cache, then each method, its numbers added to `log.payload`."""
    from ...trainers import METHODS

    results = log.payload
    results["environment"]["processes"] = num_processes()
    data = make_markov_datasets(recipe.data, seed=recipe.seed)
    max_length = max(len(data[f"{name}_train"][0]["input_ids"]) for name in ("retain", "forget1", "forget2"))
    pad_token_id = gpt2_config(recipe.model_settings, max_length).pad_token_id

    models, training = {}, {}
    original_chains = ORIGINAL_TRAINING_DATA[recipe.original_training_data]
    stages = [("original", original_chains, None), ("retrained", ["retain"], None)]
    # IAU's training phase (ℓ + α‖∇_θ ℓ‖): trained only when a method of this run unlearns that model.
    if recipe.needs_gradient_restricted_original:
        stages.append(("original_gr", original_chains, recipe.original_gradient_restriction))
    for name, chains, restriction in stages:
        with log.stage(f"train/{name}") as entry:
            models[name], training[name] = _train_or_load(
                recipe, recipe.models_path / name, chains, data, max_length, restriction
            )
            entry.update(reused=training[name].get("cached", False), compute_seconds=training[name]["seconds"])

    test_sets = {name: data[f"{name}_test"] for name in ("retain", "forget1", "forget2")}
    evaluate = {
        "leakage": recipe.data.leakage,
        "num_states": recipe.data.num_states,
        "batch_size": recipe.evaluation.batch_size,
    }
    evaluators = {}  # by the number of test sequences per split (None: all)

    def evaluator_of(examples: int | None) -> MarkovEvaluator:
        if examples not in evaluators:
            subsets = {
                name: split if examples is None else split.select(range(min(len(split), examples)))
                for name, split in test_sets.items()
            }
            evaluators[examples] = MarkovEvaluator(subsets, models["retrained"], pad_token_id, **evaluate)
        return evaluators[examples]

    evaluator = evaluator_of(recipe.evaluation.final_examples)
    trajectory_evaluator = evaluator_of(recipe.evaluation.trajectory_examples)
    results.update({name: evaluator(models[name]) for name in models})
    results["training"] = training  # seconds and steps of each model's training (from the cache when reused)
    results["methods"] = {}
    forget_train = concatenate_datasets([data["forget1_train"], data["forget2_train"]])
    if recipe.attacks is not None:  # the attacks stage: controls first, then each unlearned model after its method
        from .attacks import attack_controls, attack_method, markov_attack_inputs

        attack_inputs = markov_attack_inputs(recipe, data, pad_token_id, models["retrained"])
        results["attack_controls"] = attack_controls(log, recipe, models, attack_inputs)

    for label, spec in recipe.methods.items():
        main_process_print(f"Unlearning with {label}")
        with log.stage(f"unlearn/{label}"):
            original, config_spec = method_original(spec)
            config = build_method_config(config_spec, recipe.shared_unlearn, recipe.output_path / "methods" / label)
            callback = MarkovEvalCallback(trajectory_evaluator, recipe.evaluation.stop_at_forget_kl)
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
            trajectory = trajectory_record([callback])
            results["methods"][label] = {
                **evaluator(model),
                "method": spec["method"],
                "original": original,
                "settings": {key: value for key, value in config_spec.items() if key != "method"},
                # Unlearning time alone: the per-step evaluation of the trade-off curve is measured and subtracted.
                "unlearn_seconds": wall - trajectory["eval_seconds"],
                "history": trajectory["history"],
                "steps": trainer.state.global_step,
            }
            if getattr(trainer, "stop_history", None):  # MU-Mis with δ: every check of its stopping rule
                results["methods"][label]["stop_history"] = trainer.stop_history
            if label in recipe.hub:  # after the evaluation: the card carries its numbers
                rows = {"forget": len(forget_train), "retain": len(data["retain_train"])}
                results["methods"][label]["hub"] = publish(
                    recipe, recipe.hub[label], trainer, models["original"], results, rows
                )
        if recipe.attacks is not None and original == "standard":  # controls exist for the plain original only
            attack_method(log, recipe, label, model, models, attack_inputs, results, results["attack_controls"])
        elif recipe.attacks is not None:
            main_process_print(f"Not attacking {label}: it unlearns the gradient-restricted original (no controls).")
        # log.stage saved results.json: an interrupted run keeps what it finished (marked incomplete).


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
