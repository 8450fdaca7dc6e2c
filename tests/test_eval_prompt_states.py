"""Generation from the prompts the teacher-forced scorer computed (`PromptState`) and the packed prefill give the same
tokens as the plain paths: `generate`, one prompt at a time, and the refill loop computing every prompt itself."""

import pytest
import torch

import hf_unlearn.evaluation.generation as generation
import hf_unlearn.evaluation.runner as runner
from hf_unlearn.evaluation.generation import PromptState, common_prefix_length, greedy_refill
from hf_unlearn.evaluation.runner import score_prompt_groups
from hf_unlearn.evaluation.tofu import evaluate_tofu

from .test_generation_speed import frequent_token, make_prompts, plain_generate
from .tofu_helpers import FIXTURE_DIR, make_model, make_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module", params=[torch.float32, torch.float64], ids=["fp32", "fp64"])
def model(request, tokenizer):
    return make_model(tokenizer, seed=3).to(request.param)


def groups_of(tokenizer, prompts, answers_per_prompt=3):
    """Each prompt with a few answers (varied lengths, shared first tokens)."""
    words = tokenizer(["author", "book", "wrote", "novel", "the", "of", "and"], add_special_tokens=False)["input_ids"]
    tokens = [ids[0] for ids in words]
    return [
        {
            "prompt_ids": p["input_ids"],
            "prompt_mask": p["attention_mask"],
            "answers": [tokens[: 2 + (i + j) % 5] + [tokenizer.eos_token_id] for j in range(answers_per_prompt)],
            "answer_masks": [[1] * (3 + (i + j) % 5) for j in range(answers_per_prompt)],
        }
        for i, p in enumerate(prompts)
    ]


def scorer_states(model, tokenizer, prompts, batch_size=4):
    """The scorer's values and the prompt states it hands over for every group."""
    states = {g: None for g in range(len(prompts))}
    groups = groups_of(tokenizer, prompts)
    scored = score_prompt_groups(
        model, groups, batch_size=batch_size, pad_token_id=tokenizer.pad_token_id, show_progress=False
    )
    with_states = score_prompt_groups(
        model,
        groups,
        batch_size=batch_size,
        pad_token_id=tokenizer.pad_token_id,
        show_progress=False,
        prompt_states=states,
    )
    return scored, with_states, states


@pytest.mark.parametrize("batch_size", [1, 4, 7, 32])
def test_generation_from_scorer_states_equals_plain_generation(tokenizer, model, batch_size):
    prompts = make_prompts(tokenizer, count=17, seed=5)
    stops = [tokenizer.eos_token_id, frequent_token(model, prompts)]
    expected = plain_generate(model, prompts, 14, stops, tokenizer.pad_token_id)
    assert len({len(row) for row in expected}) > 1  # rows stop at different steps
    scored, with_states, states = scorer_states(model, tokenizer, prompts, batch_size=min(batch_size, 8))
    # Handing the states over changes no teacher-forced value.
    for a, b in zip(scored, with_states, strict=True):
        for (la, pa), (lb, pb) in zip(a, b, strict=True):
            assert (la == lb).all() and (pa == pb).all()
    assert all(isinstance(states[g], PromptState) for g in range(len(prompts)))
    # The first greedy token the scorer saw is the plain path's first token.
    assert [states[g].first_token for g in range(len(prompts))] == [row[0] for row in expected]
    kwargs = dict(max_new_tokens=14, stop_token_ids=stops, pad_token_id=tokenizer.pad_token_id)
    for reuse in (True, False):
        plain = greedy_refill(model, prompts, batch_size=batch_size, reuse_prefix_cache=reuse, **kwargs)
        assert plain == expected, reuse
        listed = [states[g] for g in range(len(prompts))]
        got = greedy_refill(
            model, prompts, batch_size=batch_size, reuse_prefix_cache=reuse, prompt_states=listed, **kwargs
        )
        assert got == expected, reuse
        some = [state if g % 3 else None for g, state in enumerate(listed)]  # a mix: the others prefilled packed
        got = greedy_refill(
            model, prompts, batch_size=batch_size, reuse_prefix_cache=reuse, prompt_states=some, **kwargs
        )
        assert got == expected, reuse


def test_prompt_state_columns_by_hand():
    head = [(torch.arange(6.0).view(1, 1, 3, 2), -torch.arange(6.0).view(1, 1, 3, 2))]
    rest = [(10 + torch.arange(4.0).view(1, 1, 2, 2), -10 - torch.arange(4.0).view(1, 1, 2, 2))]
    state = PromptState(head, rest, 3, 7)
    keys, values = state.columns(0, 1)  # tokens 1, 2 (head) and 3, 4 (rest)
    assert keys[0, 0].tolist() == [[2, 3], [4, 5], [10, 11], [12, 13]]
    assert values[0, 0].tolist() == [[-2, -3], [-4, -5], [-10, -11], [-12, -13]]
    assert state.columns(0, 4)[0][0, 0].tolist() == [[12, 13]]


def test_masked_prompts_get_no_state(tokenizer, model):
    """A prompt with masked tokens is scored at positions counting every token and generated at positions counting
    unmasked ones only: its state would be another computation, so none is handed over."""
    prompts = make_prompts(tokenizer, count=5, seed=2)
    prompts[1] = dict(prompts[1], attention_mask=[1, 0] + prompts[1]["attention_mask"][2:])
    _, _, states = scorer_states(model, tokenizer, prompts)
    assert states[1] is None and all(states[g] is not None for g in (0, 2, 3, 4))


def test_padded_prefill_where_no_packing(tokenizer, model, monkeypatch):
    """Models without 4D masks or logits kept by mask prefill left-padded; the tokens are the same."""
    prompts = make_prompts(tokenizer, count=9, seed=6)
    stops = [tokenizer.eos_token_id, frequent_token(model, prompts)]
    kwargs = dict(batch_size=4, max_new_tokens=10, stop_token_ids=stops, pad_token_id=tokenizer.pad_token_id)
    calls = []
    real = generation._packed_prefill
    monkeypatch.setattr(generation, "_packed_prefill", lambda *a, **k: calls.append(1) or real(*a, **k))
    packed = greedy_refill(model, prompts, **kwargs)
    assert calls  # the tiny Llama takes the packed prefill
    monkeypatch.setattr(generation, "keeps_logits_by_mask", lambda model: False)
    calls.clear()
    assert greedy_refill(model, prompts, **kwargs) == packed == plain_generate(model, prompts, 10, stops, 0)
    assert not calls


def test_packed_prefill_rows(tokenizer, model, monkeypatch):
    """Many prompts make several packed rows (about `_PACKED_ROW` tokens each), with the same tokens."""
    prompts = make_prompts(tokenizer, count=15, seed=7)
    stops = [tokenizer.eos_token_id, frequent_token(model, prompts)]
    widths = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    monkeypatch.setattr(generation, "_PACKED_ROW", 40)
    got = greedy_refill(
        model, prompts, batch_size=32, max_new_tokens=8, stop_token_ids=stops, pad_token_id=tokenizer.pad_token_id
    )
    hook.remove()
    assert got == plain_generate(model, prompts, 8, stops, 0)
    prefix = common_prefix_length(prompts)
    lengths = [len(p["input_ids"]) - prefix for p in prompts]
    rows, width = widths[1]  # after the shared prefix's forward: the packed prefill
    assert rows == -(-sum(lengths) // max(40, max(lengths))) > 1
    assert max(lengths) <= width < sum(lengths)


def test_suite_outputs_unchanged_by_shared_prompts(tokenizer, monkeypatch):
    """The whole suite: generation from the scorer's prompts gives the same generations and values as generation that
    computes every prompt itself (the previous path), and does take the states."""
    model = make_model(tokenizer, seed=4)
    kwargs = dict(data_dir=FIXTURE_DIR, batch_size=3, max_new_tokens=8, show_progress=False)
    taken = []
    real = runner.greedy_refill

    def spy(*args, prompt_states=None, **kw):
        taken.append(sum(state is not None for state in prompt_states or []))
        return real(*args, prompt_states=prompt_states, **kw)

    monkeypatch.setattr(runner, "greedy_refill", spy)
    shared = evaluate_tofu(model, tokenizer, **kwargs)
    assert taken and taken[-1] > 0
    monkeypatch.setattr("hf_unlearn.evaluation.tofu.suite.shares_prompt_states", lambda model, args: False)
    taken.clear()
    plain = evaluate_tofu(model, tokenizer, **kwargs)
    assert taken == [0]
    for split, values in plain["items"].items():
        for a, b in zip(values, shared["items"][split], strict=True):
            assert a == b, split
    for key in ("forget_quality", "model_utility", "forget_Q_A_ROUGE", "retain_Q_A_ROUGE", "forget_truth_ratio"):
        assert plain.get(key) == shared.get(key), key
