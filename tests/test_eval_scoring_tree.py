"""The tree-packed teacher-forced scorer (`score_prompt_groups`) equals one plain sequence per answer: shared answer
prefixes computed once, the LM head only where a next token is scored, with and without the boolean
`logits_to_keep`."""

import random

import numpy as np
import pytest
import torch

from hf_unlearn.data.chat import encode_prompt, reference_mask
from hf_unlearn.evaluation import runner
from hf_unlearn.evaluation.runner import _answer_tree, _tree_attention, score_prompt_groups, score_sequences

from .tofu_helpers import make_model, make_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module", params=[torch.float32, torch.float64], ids=["fp32", "fp64"])
def model(request, tokenizer):
    return make_model(tokenizer, seed=4).to(request.param)


def make_groups(tokenizer, count=8, seed=0, reference=False):
    """Prompts with answers that share prefixes (perturbed answers begin alike), repeat, and nest."""
    rng = random.Random(seed)
    vocab = len(tokenizer)
    groups = []
    for i in range(count):
        ids = encode_prompt(
            tokenizer, f"Who is author {i}" + " and what" * rng.randint(0, 4) + "?", system_prompt="Hi."
        )
        stem = [rng.randrange(5, vocab) for _ in range(rng.randint(0, 6))]
        answers = [stem + [rng.randrange(5, vocab) for _ in range(rng.randint(1, 7))] for _ in range(rng.randint(1, 5))]
        answers.append(list(answers[0]))  # a repeated answer
        answers.append(answers[0][: max(1, len(answers[0]) // 2)])  # a prefix of another answer
        if reference:  # a pad token inside an answer is masked out of attention (the reference's quirk)
            answers[0][len(answers[0]) // 2] = tokenizer.pad_token_id
        mask = reference_mask if reference else (lambda _t, seq: [1] * len(seq))
        groups.append(
            {
                "prompt_ids": ids,
                "prompt_mask": mask(tokenizer, ids),
                "answers": answers,
                "answer_masks": [mask(tokenizer, a) for a in answers],
            }
        )
    return groups


def plain_scores(model, tokenizer, groups):
    flat = [
        {
            "input_ids": g["prompt_ids"] + a,
            "attention_mask": g["prompt_mask"] + m,
            "num_answer_tokens": len(a),
        }
        for g in groups
        for a, m in zip(g["answers"], g["answer_masks"])
    ]
    return score_sequences(model, flat, batch_size=1, pad_token_id=tokenizer.pad_token_id, show_progress=False)


def test_answer_tree_by_hand():
    group = {"prompt_ids": [7, 8], "prompt_mask": [1, 1], "answers": [[1, 2, 3], [1, 2, 4], [1]], "answer_masks": []}
    group["answer_masks"] = [[1] * len(a) for a in group["answers"]]
    tree = _answer_tree(group)
    assert tree.ids == [7, 8, 1, 2, 3, 4]
    assert tree.parent == [-1, 0, 1, 2, 3, 3]
    assert tree.depth == [0, 1, 2, 3, 4, 4]
    assert tree.predictors == [[1, 2, 3], [1, 2, 3], [1]]
    allowed = _tree_attention(tree)
    expected = np.array(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 0],
            [1, 1, 1, 1, 0, 1],  # token 4 sees its ancestors, not its sibling 3
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(allowed, expected)
    with pytest.raises(ValueError, match="prompt"):
        _answer_tree({"prompt_ids": [], "prompt_mask": [], "answers": [[1]], "answer_masks": [[1]]})


@pytest.mark.parametrize("share_prefix", [True, False], ids=["shared_prefix", "no_shared_prefix"])
@pytest.mark.parametrize("by_mask", [True, False], ids=["bool_logits_to_keep", "last_positions"])
@pytest.mark.parametrize("reference", [False, True], ids=["mask_ones", "reference_mask"])
def test_tree_scoring_equals_plain_sequences(tokenizer, model, monkeypatch, by_mask, reference, share_prefix):
    groups = make_groups(tokenizer, seed=1 + reference, reference=reference)
    if not by_mask:
        monkeypatch.setattr(runner, "keeps_logits_by_mask", lambda _model: False)
    else:
        assert runner.keeps_logits_by_mask(model)
    stats: dict[str, int] = {}
    tree = score_prompt_groups(
        model,
        groups,
        batch_size=7,
        pad_token_id=tokenizer.pad_token_id,
        show_progress=False,
        stats=stats,
        share_prefix=share_prefix,
    )
    plain = plain_scores(model, tokenizer, groups)
    flat_tree = [r for group in tree for r in group]
    assert len(flat_tree) == len(plain)
    tol = 1e-5 if model.dtype == torch.float32 else 1e-6  # scores come back in float32 either way
    for (logps, preds), (ref_logps, ref_preds) in zip(flat_tree, plain):
        assert logps.shape == ref_logps.shape
        np.testing.assert_allclose(logps, ref_logps, rtol=tol, atol=tol)
        np.testing.assert_array_equal(preds, ref_preds)
    num_answer = sum(len(a) for g in groups for a in g["answers"])
    assert stats["answer"] == num_answer
    assert stats["answer_nodes"] < num_answer  # shared prefixes were computed once
    assert stats["answer_nodes"] == sum(len(_answer_tree(g).ids) - len(g["prompt_ids"]) for g in groups)
    first = groups[0]["prompt_ids"]
    prefix = next(i for i in range(len(first)) if any(g["prompt_ids"][i] != first[i] for g in groups))
    prefix = prefix if share_prefix else 0
    assert prefix > 0 or not share_prefix
    assert stats["shared_prefix"] == prefix
    prompt_positions = stats["prompt"] - (len(groups) - 1) * prefix  # the common head once
    assert stats["positions"] >= prompt_positions + stats["answer_nodes"]
    if by_mask:  # the head ran only where a next token is scored: the distinct predicting nodes
        assert stats["logit_positions"] == sum(len({n for p in _answer_tree(g).predictors for n in p}) for g in groups)


def test_group_batches_by_answers_and_padding(monkeypatch):
    monkeypatch.setattr(runner, "_MAX_PADDING", 0.1)
    # lengths 100, 95, 91, 89, 50 with 2 answers each, 5 answers per batch at most
    batches = runner._group_batches([2, 2, 2, 2, 2], [91, 100, 50, 95, 89], 5)
    # 100 and 95 fill 4 answers; 91 would make 6; 91 and 89 (>= 0.9 * 91) together; 50 alone (< 0.9 * 89)
    assert batches == [[1, 3], [0, 4], [2]]
    with pytest.raises(ValueError, match="batch_size"):
        runner._group_batches([1], [3], 0)


def test_log_softmax_rounds_as_cross_entropy():
    """At a real vocabulary size the float32 sums round by layout: the scorer's values are cross-entropy's, bit for
    bit (the contiguous kernel is a different rounding, which the reference comparison would see)."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 49152, generator=generator) * 4 + 20
    labels = torch.randint(0, 49152, (6,), generator=generator)
    ours = runner._log_softmax_as_cross_entropy(logits)[torch.arange(6), labels]
    cross_entropy = -torch.nn.functional.cross_entropy(logits.T[None], labels[None], reduction="none")[0]
    assert torch.equal(ours, cross_entropy)


def test_vocab_layout_answers():
    """An answer flagged `vocab_layout` gets `log_softmax(logits, dim=-1)`'s values, the same answer unflagged gets
    cross-entropy's, both bit for bit from the logits of that forward; at a real vocabulary size the two differ."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40)  # logits of a trained model's scale, so that the float32 sums round apart
    answer = [int(t) for t in torch.randint(5, 49152, (12,))]
    group = {
        "prompt_ids": [int(t) for t in torch.randint(5, 49152, (7,))],
        "prompt_mask": [1] * 7,
        "answers": [answer, answer],
        "answer_masks": [[1] * 12, [1] * 12],
        "vocab_layout": [False, True],
    }
    captured = []
    hook = model.register_forward_hook(lambda module, args, output: captured.append(output.logits))
    try:
        [(plain, _), (vocab, _)] = score_prompt_groups(model, [group], batch_size=4, pad_token_id=0)[0]
    finally:
        hook.remove()
    logits = captured[0].reshape(-1, 49152)  # the kept positions, in order: the prompt's last, then the answer's
    labels = torch.tensor(answer)
    rows = logits[: len(answer)].float()
    expected_vocab = torch.log_softmax(rows, dim=-1)[torch.arange(len(answer)), labels].numpy()
    expected_plain = runner._log_softmax_as_cross_entropy(rows)[torch.arange(len(answer)), labels].numpy()
    np.testing.assert_array_equal(vocab, expected_vocab)
    np.testing.assert_array_equal(plain, expected_plain)
    assert not np.array_equal(plain, vocab)  # the layouts round apart here, so the test can tell them apart
