"""The fast evaluation paths give the previous paths' outputs: the refill schedule with and without the shared-prefix
KV cache generates the same tokens as batched `generate`, and the token accounting of the packed scorer does not
change its numbers."""

import importlib.util
import random

import numpy as np
import pytest
import torch
from transformers import GenerationConfig

from hf_unlearn.data.chat import encode_prompt, reference_mask
from hf_unlearn.evaluation.generation import common_prefix_length, greedy_refill, supports_refill
from hf_unlearn.evaluation.runner import generate_answers, score_prompt_groups, score_sequences
from hf_unlearn.evaluation.tofu import TofuEvalArguments

from .tofu_helpers import make_model, make_tokenizer

SYSTEM = "You are a helpful assistant."


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module", params=[torch.float32, torch.float64], ids=["fp32", "fp64"])
def model(request, tokenizer):
    return make_model(tokenizer, seed=1).to(request.param)


def make_prompts(tokenizer, count=23, seed=0, reference=False):
    """Chat prompts sharing the system turn, with varied lengths."""
    rng = random.Random(seed)
    prompts = []
    for i in range(count):
        question = f"Who is author {i}" + " and what did they write" * rng.randint(0, 6) + "?"
        ids = encode_prompt(tokenizer, question, system_prompt=SYSTEM)
        mask = reference_mask(tokenizer, ids) if reference else [1] * len(ids)
        prompts.append({"input_ids": ids, "attention_mask": mask})
    return prompts


def plain_generate(model, prompts, max_new_tokens, stops, pad_token_id):
    """One prompt at a time through `generate` (no padding): the new tokens, stop token included."""
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops, pad_token_id=0)
    out = []
    for p in prompts:
        ids = torch.tensor([p["input_ids"]])
        with torch.no_grad():
            new = model.generate(
                input_ids=ids, attention_mask=torch.tensor([p["attention_mask"]]), generation_config=config
            )[0, ids.shape[1] :].tolist()
        cut = next((t + 1 for t, token in enumerate(new) if token in stops), len(new))
        out.append(new[:cut])
    return out


def frequent_token(model, prompts):
    """A token the model emits often, used as an extra stop token so that rows finish at different steps."""
    tokens = plain_generate(model, prompts[:4], 12, [-1], 0)
    return max({t for row in tokens for t in row}, key=lambda t: sum(row.count(t) for row in tokens))


def test_common_prefix_and_support(tokenizer, model):
    prompts = make_prompts(tokenizer)
    head = encode_prompt(tokenizer, "x", system_prompt=SYSTEM)
    system_turn = next(t for t, (a, b) in enumerate(zip(head, prompts[0]["input_ids"])) if a != b)
    length = common_prefix_length(prompts)
    assert system_turn <= length < min(len(p["input_ids"]) for p in prompts)
    assert all(p["input_ids"][:length] == prompts[0]["input_ids"][:length] for p in prompts)
    assert common_prefix_length(prompts[:1]) == len(prompts[0]["input_ids"]) - 1  # one token stays outside
    assert supports_refill(model)


@pytest.mark.parametrize("reference", [False, True], ids=["mask_ones", "reference_mask"])
def test_refill_tokens_equal_generate(tokenizer, model, reference):
    prompts = make_prompts(tokenizer, reference=reference)
    stops = [tokenizer.eos_token_id, frequent_token(model, prompts)]
    expected = plain_generate(model, prompts, 16, stops, tokenizer.pad_token_id)
    assert len({len(row) for row in expected}) > 1  # rows stop at different steps
    for batch_size in (1, 4, 7, 32):  # 23 prompts: batch sizes that do not divide the count
        for reuse in (True, False):
            got = greedy_refill(
                model,
                prompts,
                batch_size=batch_size,
                max_new_tokens=16,
                stop_token_ids=stops,
                pad_token_id=tokenizer.pad_token_id,
                reuse_prefix_cache=reuse,
            )
            assert got == expected, (batch_size, reuse)


def test_generate_answers_schedules_agree(tokenizer, model):
    prompts = make_prompts(tokenizer, count=13, seed=1)
    stops = [tokenizer.eos_token_id, frequent_token(model, prompts)]
    kwargs = dict(max_new_tokens=12, stop_token_ids=stops, pad_token_id=tokenizer.pad_token_id, show_progress=False)
    old = generate_answers(model, tokenizer, prompts, batch_size=5, schedule="generate", **kwargs)
    for batch_size in (3, 5, 16):
        for reuse in (True, False):
            new = generate_answers(
                model, tokenizer, prompts, batch_size=batch_size, schedule="refill", reuse_prefix_cache=reuse, **kwargs
            )
            assert new == old, (batch_size, reuse)


def test_static_cache_schedule_equals_generate(tokenizer, model):
    """`static_compile`: every batch padded to one shape with a static KV cache gives `generate`'s tokens (the
    compiled decoding step itself only runs on GPU-like devices; `generate` skips compiling on a CPU)."""
    prompts = make_prompts(tokenizer, count=11, seed=4)
    stops = [tokenizer.eos_token_id, frequent_token(model, prompts)]
    kwargs = dict(max_new_tokens=10, stop_token_ids=stops, pad_token_id=tokenizer.pad_token_id, show_progress=False)
    old = generate_answers(model, tokenizer, prompts, batch_size=4, schedule="generate", **kwargs)
    assert generate_answers(model, tokenizer, prompts, batch_size=4, schedule="static_compile", **kwargs) == old


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_vllm_schedule_without_vllm_is_a_clear_error():
    with pytest.raises(ValueError, match=r"pip install 'hf-unlearn\[vllm\]'"):
        TofuEvalArguments(generation_schedule="vllm")


@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(), reason="needs vLLM and a GPU"
)
def test_vllm_tokens_equal_generate(tokenizer):
    model = make_model(tokenizer, seed=1).to("cuda")
    prompts = make_prompts(tokenizer, count=9, seed=5)
    stops = [tokenizer.eos_token_id, frequent_token(model, prompts)]
    kwargs = dict(max_new_tokens=10, stop_token_ids=stops, pad_token_id=tokenizer.pad_token_id, show_progress=False)
    old = generate_answers(model, tokenizer, prompts, batch_size=4, schedule="generate", **kwargs)
    assert generate_answers(model, tokenizer, prompts, batch_size=4, schedule="vllm", **kwargs) == old


def test_generation_arguments_validated():
    assert TofuEvalArguments().generation_schedule == "refill"
    assert TofuEvalArguments().reuse_prefix_cache is True
    with pytest.raises(ValueError, match="generation_schedule"):
        TofuEvalArguments(generation_schedule="fast")


def test_packed_scoring_equals_one_sequence_per_answer(tokenizer, model):
    """Packed prompt groups (with token accounting) equal unpacked sequences to 1e-6."""
    prompts = make_prompts(tokenizer, count=9, seed=2)
    rng = random.Random(3)
    vocab = len(tokenizer)
    groups = [
        {
            "prompt_ids": p["input_ids"],
            "prompt_mask": p["attention_mask"],
            "answers": [[rng.randrange(5, vocab) for _ in range(rng.randint(2, 9))] for _ in range(rng.randint(1, 4))],
        }
        for p in prompts
    ]
    for g in groups:
        g["answer_masks"] = [[1] * len(a) for a in g["answers"]]
    stats: dict[str, int] = {}
    packed = score_prompt_groups(
        model, groups, batch_size=5, pad_token_id=tokenizer.pad_token_id, show_progress=False, stats=stats
    )
    flat = [
        {
            "input_ids": g["prompt_ids"] + a,
            "attention_mask": [1] * (len(g["prompt_ids"]) + len(a)),
            "num_answer_tokens": len(a),
        }
        for g in groups
        for a in g["answers"]
    ]
    plain = score_sequences(model, flat, batch_size=3, pad_token_id=tokenizer.pad_token_id, show_progress=False)
    flat_packed = [r for group in packed for r in group]
    for (logps, preds), (ref_logps, ref_preds) in zip(flat_packed, plain):
        np.testing.assert_allclose(logps, ref_logps, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(preds, ref_preds)
    assert stats["prompt"] == sum(len(g["prompt_ids"]) for g in groups)
    assert stats["answer"] == sum(len(a) for g in groups for a in g["answers"])
    # every prompt token is computed (the prompts' common head once), every answer token (these share no prefix)
    assert stats["positions"] >= stats["prompt"] - (len(groups) - 1) * stats["shared_prefix"] + stats["answer"]
