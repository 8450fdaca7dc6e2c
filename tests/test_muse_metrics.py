"""The MUSE metrics (`hf_unlearn.evaluation.muse`) against values computed by hand and against a brute-force
re-implementation (one unbatched forward / `generate` per item, ROUGE-L from a plain LCS)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from hf_unlearn.evaluation import mia_auc, min_k_score, privleak
from hf_unlearn.evaluation.muse import (
    MuseEvalArguments,
    evaluate_muse,
    knowmem_answer,
    knowmem_prompt,
    rouge_l_f1,
    verbmem_reference,
)
from tests.tofu_helpers import make_model, make_tokenizer


def test_rouge_l_f1_by_hand():
    # LCS("the cat sat on the mat", "the cat lay on the mat") = the cat on the mat = 5 of 6 and 6 tokens.
    assert rouge_l_f1("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    # LCS(a b c, a c d e) = 2: P = 2/3, R = 2/4, F = 2PR/(P+R) = 4/7.
    assert rouge_l_f1("a b c", "a c d e") == pytest.approx(4 / 7)
    # No stemming (the MUSE reference's setting): "cats" and "cat" differ.
    assert rouge_l_f1("cats", "cat") == 0.0
    assert rouge_l_f1("", "cat") == 0.0


class WordTokenizer:
    """One token per word, BOS (id 0) first with special tokens, as Llama's tokenizer adds `<s>`."""

    def __init__(self):
        self.vocab = {"<s>": 0}

    def __call__(self, text, add_special_tokens=True):
        ids = [self.vocab.setdefault(word, len(self.vocab)) for word in text.split()]
        return {"input_ids": ([0] if add_special_tokens else []) + ids}

    def decode(self, ids, skip_special_tokens=False):
        words = {i: w for w, i in self.vocab.items()}
        return " ".join(words[i] for i in ids if not (skip_special_tokens and i == 0))


def test_verbmem_reference_counts_bos_in_the_cut():
    tokenizer = WordTokenizer()
    # 128 tokens with BOS = BOS + 127 words, as the reference cuts `tokenizer(gt).input_ids[:, :128]`.
    words = [f"w{i}" for i in range(200)]
    assert verbmem_reference(tokenizer, " ".join(words), 128) == " ".join(words[:127])
    assert verbmem_reference(tokenizer, "one two three", 3) == "one two"
    assert verbmem_reference(tokenizer, "one two", 128) == "one two"


def test_knowmem_prompt_and_answer_cut_by_hand():
    icl = [{"question": "Q1?", "answer": "A1"}, {"question": "Q2?", "answer": "A2"}]
    assert (
        knowmem_prompt(icl, "Q3?")
        == "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer: A2\n\nQuestion: Q3?\nAnswer: "
    )
    assert knowmem_prompt([], "Q?") == "Question: Q?\nAnswer: "
    assert knowmem_answer("Ilsa Brandt\n\nQuestion: next") == "Ilsa Brandt"
    assert knowmem_answer("Ilsa Brandt\nQuestion: next") == "Ilsa Brandt"
    assert knowmem_answer("Ilsa Question: Brandt") == "Ilsa "
    assert knowmem_answer("no stop here") == "no stop here"


def test_privleak_composition_by_hand():
    # Min-40 %: the int(5 * 0.4) = 2 lowest log-probs, -5 and -4, negated and averaged = 4.5.
    assert min_k_score([-1.0, -2.0, -3.0, -4.0, -5.0], 0.4) == pytest.approx(4.5)
    # AUC = P(holdout > forget) over the 4 pairs: 3>1, 3>2, 1.5>1 hold, 1.5>2 does not: 3/4.
    auc = mia_auc([1.0, 2.0], [3.0, 1.5])
    assert auc == pytest.approx(0.75)
    # (0.5 - 0.75)/(1 - 0.5) * 100 = -50; the reference's labels give AUC' = 0.25, (0.25 - 0.5)/0.5 * 100 = -50.
    assert privleak(auc, 0.5) == pytest.approx(-50.0)
    assert privleak(0.8, 0.6) == pytest.approx((0.6 - 0.8) / 0.4 * 100)


# ------------------------------------------------------------------------------------------------ brute force


def _rouge_tokens(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _lcs_f1(prediction: str, reference: str) -> float:
    a, b = _rouge_tokens(prediction), _rouge_tokens(reference)
    if not a or not b:
        return 0.0
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    lcs = table[-1][-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def _greedy(model, tokenizer, prompt: str, new_tokens: int) -> str:
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=True)["input_ids"]])
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    new = out[0, ids.shape[1] :].tolist()
    if tokenizer.eos_token_id in new:
        new = new[: new.index(tokenizer.eos_token_id)]
    return tokenizer.decode(new, skip_special_tokens=True).strip()


def _min_k_brute(model, tokenizer, text: str, k: float) -> float:
    ids = torch.tensor([tokenizer(text, add_special_tokens=True)["input_ids"]])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
    token = logps.gather(-1, ids[0, 1:, None])[:, 0].numpy()
    count = max(1, int(len(token) * k))
    return float(-np.sort(token)[:count].mean())


@pytest.fixture(scope="module")
def tiny():
    """The tiny Llama after a few steps on the fixture's articles and QA, so generations overlap the references."""
    tokenizer = make_tokenizer()
    model = make_model(tokenizer)
    data = _data()
    texts = [row["prompt"] + row["gt"] for row in data["verbmem"]] + [
        knowmem_prompt([], row["question"]) + row["answer"] + "\n\n" for row in data["knowmem_forget"]
    ]
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(22):
        for text in texts:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            model(ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval(), tokenizer


def _data():
    import json
    from pathlib import Path

    root = Path(__file__).parent / "fixtures" / "muse"
    read = lambda p: json.loads((root / p).read_text())
    return {
        "verbmem": read("verbmem/forget.json"),
        "knowmem_forget": read("knowmem/forget_qa.json"),
        "knowmem_forget_icl": read("knowmem/forget_qa_icl.json"),
        "knowmem_retain": read("knowmem/retain_qa.json"),
        "knowmem_retain_icl": read("knowmem/retain_qa_icl.json"),
        "privleak_forget": read("privleak/forget.json"),
        "privleak_holdout": read("privleak/holdout.json"),
    }


def test_evaluate_muse_matches_brute_force(tiny):
    model, tokenizer = tiny
    data = _data()
    args = MuseEvalArguments(verbmem_max_new_tokens=12, knowmem_max_new_tokens=6, batch_size=2, generation_batch_size=2)
    result = evaluate_muse(model, tokenizer, data, args, reference_auc=0.4, show_progress=False)
    summary = result["summary"]

    verbmem = [
        _lcs_f1(_greedy(model, tokenizer, row["prompt"], 12), tokenizer.decode(
            tokenizer(row["gt"])["input_ids"][:12], skip_special_tokens=True))
        for row in data["verbmem"]
    ]  # fmt: skip
    assert summary["verbmem_f"] == pytest.approx(100 * np.mean(verbmem), abs=1e-9)
    for split, metric in (("forget", "knowmem_f"), ("retain", "knowmem_r")):
        icl = "".join(f"Question: {p['question']}\nAnswer: {p['answer']}\n\n" for p in data[f"knowmem_{split}_icl"])
        scores = []
        for row in data[f"knowmem_{split}"]:
            answer = _greedy(model, tokenizer, icl + f"Question: {row['question']}\nAnswer: ", 6)
            answer = re.split(r"\n\n|\nQuestion|Question:", answer)[0]
            scores.append(_lcs_f1(answer, row["answer"]))
        assert summary[metric] == pytest.approx(100 * np.mean(scores), abs=1e-9)

    forget = [_min_k_brute(model, tokenizer, text, 0.4) for text in data["privleak_forget"]]
    holdout = [_min_k_brute(model, tokenizer, text, 0.4) for text in data["privleak_holdout"]]
    np.testing.assert_allclose([i["min_k"] for i in result["items"]["privleak_forget"]], forget, rtol=1e-4)
    pairs = [(h > f) + 0.5 * (h == f) for f in forget for h in holdout]
    auc = sum(pairs) / len(pairs)
    assert summary["privleak_auc"] == pytest.approx(auc)
    assert summary["privleak"] == pytest.approx((0.4 - auc) / 0.6 * 100)
    assert summary["num_items"]["verbmem"] == 3 and summary["num_items"]["privleak_holdout"] == 3
    assert 0 < summary["verbmem_f"] < 100 and summary["knowmem_f"] > 0  # the brute force checked real overlaps


def test_evaluate_muse_limits_and_reference_notice(tiny):
    model, tokenizer = tiny
    args = MuseEvalArguments(metrics=["privleak"], max_privleak_items=2)
    summary = evaluate_muse(model, tokenizer, _data(), args, show_progress=False)["summary"]
    assert set(summary["num_items"]) == {"privleak_forget", "privleak_holdout"}
    assert summary["num_items"]["privleak_forget"] == 2
    assert summary["privleak"] == pytest.approx((0.5 - summary["privleak_auc"]) / 0.5 * 100)
    assert summary["notices"] and not math.isnan(summary["privleak"])


def test_muse_eval_arguments_refuse_bad_values():
    with pytest.raises(ValueError, match="metrics"):
        MuseEvalArguments(metrics=["verbmem"])
    with pytest.raises(ValueError, match="min_k"):
        MuseEvalArguments(min_k=0)
    with pytest.raises(ValueError, match="max_knowmem_items"):
        MuseEvalArguments(max_knowmem_items=0)
