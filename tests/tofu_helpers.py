"""Tiny offline tokenizer and model for the TOFU tests (no Hub, no shared/ folder)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "tofu"

# ChatML with an optional `date_string`, like SmolLM2's template plus a Llama-3-style date line.
CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nDefault system.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'system' and date_string is defined %}{{ 'Today Date: ' + date_string + '\n' }}{% endif %}"
    "{{ message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A template with no system role support and no date_string.
NO_SYSTEM = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]


def fixture_rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURE_DIR / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def _corpus() -> list[str]:
    texts = []
    for path in sorted(FIXTURE_DIR.glob("*.jsonl")):
        for row in fixture_rows(path.stem):
            for value in row.values():
                texts.extend(value if isinstance(value, list) else [value])
    return texts + ["Question: Answer: system user assistant Today Date: You are a helpful assistant."]


@cache
def _tokenizer_json() -> str:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    return tok.to_str()


def make_tokenizer(chat_template: str | None = CHATML, pad: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the fixture text (~420 tokens), eos = `<|im_end|>` as in SmolLM2."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        bos_token="<s>",
        eos_token="<|im_end|>",
        pad_token="<pad>" if pad else None,
        additional_special_tokens=["<|im_start|>", "</s>"],
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def make_model(tokenizer, seed: int = 0, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    model = LlamaForCausalLM(config)
    # Sharper (less uniform) predictions than the default init, so metrics are not all near-identical.
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    return model.eval()


def save_tiny_model(folder: Path) -> Path:
    """A tiny Llama and the fixture tokenizer saved like any local model folder."""
    tokenizer = make_tokenizer()
    make_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_fixture(folder: Path, overrides: dict[str, list[dict] | None] | None = None) -> Path:
    """Copy the fixture into `folder`, replacing (or, with None, deleting) some configs."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in FIXTURE_DIR.glob("*.jsonl"):
        (folder / path.name).write_text(path.read_text())
    for name, rows in (overrides or {}).items():
        target = folder / f"{name}.jsonl"
        if rows is None:
            target.unlink()
        else:
            target.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def tiny_recipe(base, out, **changes):
    """The tiny TOFU recipe of the tests (and of `benchmarks/module_walk.py`): fine-tune target and retain, unlearn
    with GA and IMU, evaluate, report; `changes` replace top-level sections."""
    recipe = {
        "task": "tofu",
        "output_dir": str(out),
        "data_dir": str(FIXTURE_DIR),
        "forget_split": "forget05",
        "seed": 0,
        "models": {
            "base": {"name_or_path": str(base)},
            "target": {"train_data": [{"config": "retain_perturbed"}, {"config": "forget05"}]},
            "retain": {"train_data": ["retain_perturbed"]},
        },
        "finetune": {
            "learning_rate": 1e-2,
            "num_train_epochs": 2,
            "per_device_train_batch_size": 4,
            "disable_tqdm": True,
        },
        "unlearn_data": {"forget": ["forget05"], "retain": ["retain_perturbed"]},
        "unlearn": {"learning_rate": 1e-3, "max_steps": 2, "per_device_train_batch_size": 2, "disable_tqdm": True},
        "methods": {"GA": {}, "IMU": {"trainable": "head", "learning_rate": 1e-2}},
        "evaluation": {"batch_size": 8, "max_new_tokens": 4, "max_retain_items": 3},
        "report": {"samples": 2},
    }
    recipe.update(changes)
    return recipe
