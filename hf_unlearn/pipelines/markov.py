"""The synthetic Markov-chain benchmark end to end (SPEC §4): data, original and retrained GPT-2, unlearning, metrics."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from datasets import concatenate_datasets
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from .. import __version__
from ..data.markov import make_markov_datasets
from ..data.pairing import pad_examples
from ..evaluation.markov import MarkovEvalCallback, MarkovEvaluator
from ..recipe import build_method_config, check_keys, method_specs
from ..reporting import format_table, plot_markov_tradeoff
from ..trainers import METHODS
from ..utils import atomic_write_json

__all__ = ["run_markov"]

logger = logging.getLogger(__name__)

RECIPE_KEYS = {"task", "output_dir", "models_dir", "seed", "data", "model", "original_training_data", "train", "unlearn",
               "methods", "evaluation"}
# Per-step evaluation draws the trade-off curve; on CPU it dominates the run, so it may use the first
# `trajectory_examples` sequences of each test split (None: all). Final numbers always use the full test sets.
DEFAULT_EVALUATION = {"trajectory_examples": None, "batch_size": 1024}
ORIGINAL_TRAINING_DATA = {"retain+forget1": ["retain", "forget1"], "all": ["retain", "forget1", "forget2"]}
# SPEC §4: AdamW lr 5e-4, eps 1e-6, no weight decay, batch 128, 5 epochs, constant lr.
DEFAULT_TRAIN = {
    "learning_rate": 5e-4,
    "adam_epsilon": 1e-6,
    "weight_decay": 0.0,
    "per_device_train_batch_size": 128,
    "num_train_epochs": 5,
    "lr_scheduler_type": "constant",
}
DEFAULT_MODEL = {"n_layer": 4, "n_embd": 128, "n_head": 4}


def run_markov(recipe: dict[str, Any], output_dir: str | Path | None = None) -> dict[str, Any]:
    """Run a Markov recipe; writes `results.json` and `tradeoff.png` into the output directory and returns the results."""
    check_keys(recipe, RECIPE_KEYS, "the Markov recipe")
    specs = method_specs(recipe.get("methods"))
    output_dir = Path(output_dir or recipe.get("output_dir") or "outputs/markov")
    # Several recipes (e.g. an ablation) can share one cache of original/retrained models.
    models_dir = Path(recipe.get("models_dir") or output_dir / "models")
    seed = int(recipe.get("seed", 42))
    data_settings = {"seed": seed, **(recipe.get("data") or {})}
    original_data = recipe.get("original_training_data", "retain+forget1")
    if original_data not in ORIGINAL_TRAINING_DATA:
        raise ValueError(f"original_training_data={original_data!r} is not one of {list(ORIGINAL_TRAINING_DATA)}.")
    train_settings = {**DEFAULT_TRAIN, "seed": seed, **(recipe.get("train") or {})}
    check_keys(train_settings, {f.name for f in dataclasses.fields(TrainingArguments)}, "train (TrainingArguments)")
    shared_unlearn = {"seed": seed, **(recipe.get("unlearn") or {})}
    evaluation = {**DEFAULT_EVALUATION, **check_keys(recipe.get("evaluation"), DEFAULT_EVALUATION, "evaluation")}
    for spec in specs.values():  # fail on a bad method setting before hours of training, not after
        build_method_config(spec, shared_unlearn, output_dir / "methods" / "_check")

    started = time.perf_counter()
    try:
        data = make_markov_datasets(**data_settings)
    except TypeError as error:
        raise ValueError(f"Bad `data` settings in the Markov recipe: {error}") from None
    max_length = max(len(data[f"{name}_train"][0]["input_ids"]) for name in ("retain", "forget1", "forget2"))
    model_settings = {**DEFAULT_MODEL, **(recipe.get("model") or {})}
    pad_token_id = _gpt2_config(model_settings, max_length).pad_token_id

    timings = {}
    models = {}
    for name, chains in (("original", ORIGINAL_TRAINING_DATA[original_data]), ("retrained", ["retain"])):
        tick = time.perf_counter()
        fingerprint = {"model": model_settings, "max_length": max_length, "data": data_settings,
                       "train": train_settings, "chains": chains, "hf_unlearn": __version__}
        train_set = concatenate_datasets([data[f"{chain}_train"] for chain in chains])
        models[name] = _train_or_load(models_dir / name, fingerprint,
                                      _gpt2_config(model_settings, max_length), train_set, train_settings)
        timings[f"{name}_seconds"] = time.perf_counter() - tick

    test_sets = {name: data[f"{name}_test"] for name in ("retain", "forget1", "forget2")}
    evaluate = {"leakage": data_settings.get("leakage", 0.2), "batch_size": evaluation["batch_size"]}
    evaluator = MarkovEvaluator(test_sets, models["retrained"], pad_token_id, **evaluate)
    trajectory_evaluator = evaluator
    if evaluation["trajectory_examples"] is not None:
        subsets = {name: split.select(range(min(len(split), evaluation["trajectory_examples"])))
                   for name, split in test_sets.items()}
        trajectory_evaluator = MarkovEvaluator(subsets, models["retrained"], pad_token_id, **evaluate)
    results = {"original": evaluator(models["original"]), "retrained": evaluator(models["retrained"]), "methods": {}}

    forget_train = concatenate_datasets([data["forget1_train"], data["forget2_train"]])

    def _payload() -> dict[str, Any]:
        return {
            "task": "markov",
            "settings": {"data": data_settings, "model": model_settings, "original_training_data": original_data,
                         "train": train_settings, "unlearn": shared_unlearn, "evaluation": evaluation},
            **results,
            "timings": timings,
            "environment": {"hf_unlearn": __version__, "torch": torch.__version__, "threads": torch.get_num_threads()},
        }

    for label, spec in specs.items():
        logger.info("Unlearning with %s", label)
        config = build_method_config(spec, shared_unlearn, output_dir / "methods" / label)
        callback = MarkovEvalCallback(trajectory_evaluator)
        trainer_class = METHODS[spec["method"]][1]
        model = copy.deepcopy(models["original"])
        model.config.pad_token_id = pad_token_id
        trainer = trainer_class(model, config, forget_dataset=forget_train, retain_dataset=data["retain_train"],
                                callbacks=[callback])
        tick = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - tick
        results["methods"][label] = {
            **evaluator(model),
            "method": spec["method"],
            "settings": {key: value for key, value in spec.items() if key != "method"},
            # Unlearning time alone: the per-step evaluation of the trade-off curve is measured and subtracted.
            "unlearn_seconds": wall - callback.seconds,
            "history": callback.history,
        }
        # Written after every method, so an interrupted run keeps what it finished (marked incomplete).
        atomic_write_json(output_dir / "results.json", {**_payload(), "complete": False})
    timings["total_seconds"] = time.perf_counter() - started
    payload = {**_payload(), "complete": True}
    atomic_write_json(output_dir / "results.json", payload)
    plot_markov_tradeoff(payload, output_dir / "tradeoff.png")
    print(markov_table(payload))
    print(f"\nWrote {output_dir / 'results.json'} and {output_dir / 'tradeoff.png'} "
          f"({timings['total_seconds']:.0f} s in all).")
    return payload


def markov_table(results: dict[str, Any]) -> str:
    """Rows like the IMU paper's Table 12: ℓ_r ↓, ℓ_r^KL ↓, ℓ_f ↑, ℓ_f^KL ↑, plus per forget chain."""
    columns = ["retain_loss", "retain_kl", "forget_loss", "forget_kl", "forget1_loss", "forget2_loss",
               "unlearn_seconds"]
    rows = [("Original", results["original"]), ("Retrained", results["retrained"])]
    rows += list(results["methods"].items())
    return format_table([[name] + [values.get(column) for column in columns] for name, values in rows],
                        ["model", "ℓ_r ↓", "ℓ_r^KL ↓", "ℓ_f ↑", "ℓ_f^KL ↑", "ℓ_f1", "ℓ_f2", "time (s)"])


def _gpt2_config(settings: dict[str, Any], max_length: int) -> GPT2Config:
    """A small GPT-2 over the 10 states plus one padding id (10)."""
    check_keys(settings, set(GPT2Config().to_dict()), "model (GPT2Config fields)")
    return GPT2Config(**{"vocab_size": 11, "n_positions": max_length, "pad_token_id": 10, "bos_token_id": 10,
                         "eos_token_id": 10, **settings})


def _train_or_load(path: Path, fingerprint: dict[str, Any], config: GPT2Config, train_set, train_settings) -> GPT2LMHeadModel:
    """Reuse the cached model only when it was trained with exactly these settings; otherwise (re)train it."""
    stamp = path / "hf_unlearn_fingerprint.json"
    fingerprint = json.loads(json.dumps(fingerprint))  # normalise tuples etc. as they read back
    if stamp.is_file():
        if json.loads(stamp.read_text()) == fingerprint:
            print(f"Reusing the cached {path.name} model at {path} (same data, model and training settings).")
            return GPT2LMHeadModel.from_pretrained(path, use_safetensors=True)
        print(f"The cached {path.name} model at {path} was trained with other settings: retraining it.")
    print(f"Training the {path.name} model on {len(train_set)} sequences.")
    torch.manual_seed(train_settings["seed"])
    model = GPT2LMHeadModel(config)
    scratch = path.with_name(f".{path.name}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    args = TrainingArguments(output_dir=str(scratch), save_strategy="no", report_to="none", logging_steps=50,
                             remove_unused_columns=False, **train_settings)
    trainer = Trainer(model=model, args=args, train_dataset=train_set,
                      data_collator=lambda examples: pad_examples(examples, config.pad_token_id))
    trainer.train()
    model.save_pretrained(scratch, safe_serialization=True)
    atomic_write_json(scratch / stamp.name, fingerprint)
    # Swap in the finished folder only now, so an interrupted run never leaves a half-saved model behind.
    shutil.rmtree(path, ignore_errors=True)
    scratch.rename(path)
    return model
