"""Every TOFU metric against hand computations (docs/metrics.md)."""

import math

import numpy as np
import pytest
import torch

from hf_unlearn.evaluation import metrics as M
from hf_unlearn.utils import token_logprobs


def test_qa_probability_is_per_token_geometric_mean():
    # Token probabilities 0.5, 0.25, 0.125: NLL = 6 ln 2 over 3 tokens -> exp(-2 ln 2) = 0.25 = (0.5·0.25·0.125)^(1/3).
    avg_nll = -(math.log(0.5) + math.log(0.25) + math.log(0.125)) / 3
    assert M.qa_probability(avg_nll) == pytest.approx(0.25)
    # Several answers: mean of their probabilities.
    assert M.qa_probability([math.log(2), math.log(4)]) == pytest.approx((0.5 + 0.25) / 2)


def test_probability_from_fixed_logits():
    # Vocabulary of 2, uniform logits: every labelled token has p = 0.5 -> Q_A_Prob = 0.5 whatever the length.
    logits = torch.zeros(1, 4, 2)
    labels = torch.tensor([[-100, 1, 0, 1]])
    logps, mask = token_logprobs(logits, labels)
    avg_nll = float(-logps.sum() / mask.sum())
    assert M.qa_probability(avg_nll) == pytest.approx(0.5)


def test_truth_ratio_and_both_aggregations():
    # c = 1.0, wrong = [2.0, 4.0] -> w = 3.0; TR = e^-3 / e^-1 = e^-2.
    tr = M.truth_ratio(1.0, [2.0, 4.0])
    assert tr == pytest.approx(math.exp(-2.0), rel=1e-8)
    # closer_to_1: mean(min(TR, 1/TR)); true_better: mean(max(0, 1 - TR)).
    trs = [0.5, 2.0, 1.0]
    assert M.aggregate_truth_ratio(trs, "closer_to_1") == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert M.aggregate_truth_ratio(trs, "true_better") == pytest.approx((0.5 + 0.0 + 0.0) / 3)
    with pytest.raises(ValueError, match="aggregation"):
        M.aggregate_truth_ratio(trs, "mean")


def test_normalized_probability():
    # p_c = 0.5, wrong p = 0.25, 0.25 -> 0.5 / (0.5 + 0.5) = 0.5.
    value = M.normalized_probability(math.log(2), [math.log(4), math.log(4)])
    assert value == pytest.approx(0.5)


def test_forget_quality_is_ks_pvalue():
    # Identical samples: KS statistic 0, p-value 1. Disjoint samples of size 3: exact two-sided p = 2/C(6,3) = 0.1.
    assert M.forget_quality([0.1, 0.2, 0.3], [0.1, 0.2, 0.3]) == pytest.approx(1.0)
    assert M.forget_quality([0.1, 0.2, 0.3], [0.7, 0.8, 0.9]) == pytest.approx(0.1)


def test_harmonic_mean_with_zero_component():
    assert M.harmonic_mean([1.0, 0.5, 0.25]) == pytest.approx(3 / (1 + 2 + 4))
    assert M.harmonic_mean([0.9, 0.0, 0.8]) == 0.0
    with pytest.raises(ValueError):
        M.harmonic_mean([0.5, -0.1])


def test_extraction_strength_including_reference_quirk():
    y = [5, 6, 7, 8]
    assert M.extraction_strength([5, 6, 7, 8], y) == 1.0  # k* = 0
    assert M.extraction_strength([0, 6, 7, 8], y) == pytest.approx(0.75)  # k* = 1
    assert M.extraction_strength([5, 6, 0, 8], y) == pytest.approx(0.25)  # k* = 3: only the last token matches
    # No suffix matches: the reference gives 1/n (same as k* = n-1), the clean definition 0.
    assert M.extraction_strength([5, 6, 7, 0], y) == pytest.approx(0.25)
    assert M.extraction_strength([5, 6, 7, 0], y, reference_floor=False) == 0.0
    assert M.extraction_strength([5, 6, 0, 8], y, reference_floor=False) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        M.extraction_strength([1, 2], [1, 2, 3])


def test_exact_memorization():
    assert M.exact_memorization([5, 0, 7, 0], [5, 6, 7, 8]) == pytest.approx(0.5)


def test_min_k_score():
    logps = [-0.1, -3.0, -0.2, -2.0, -0.5]
    # floor(0.4 * 5) = 2 smallest: -3, -2 -> score 2.5.
    assert M.min_k_score(logps, k=0.4) == pytest.approx(2.5)
    # floor(0.4 * 2) = 0 -> at least 1.
    assert M.min_k_score([-1.0, -4.0], k=0.4) == pytest.approx(4.0)


def test_mia_auc_and_privleak_sign():
    # Forget scores all below holdout scores (memorised forget set): AUC = 1 -> privleak -100 against 0.5.
    auc = M.mia_auc([0.1, 0.2], [0.5, 0.6, 0.7])
    assert auc == 1.0
    assert M.privleak(auc) == pytest.approx(-100.0)
    # One inversion out of 4 pairs: AUC = 0.75.
    assert M.mia_auc([0.1, 0.6], [0.5, 0.7]) == pytest.approx(0.75)
    # privleak = (AUC_retain - AUC) / (1 - AUC_retain) * 100; the published reference numbers.
    assert M.privleak(0.99995, 0.3624) == pytest.approx(-99.99, abs=0.01)
    assert M.privleak(0.3624, 0.3624) == 0.0
    assert M.privleak(0.2, 0.5) == pytest.approx(60.0)  # over-unlearned: positive
    with pytest.raises(ValueError):
        M.privleak(0.5, 1.0)


def test_loss_and_zlib_scores():
    assert M.loss_score(1.5) == 1.5
    text = "abc abc abc"
    import zlib

    assert M.zlib_score(2.0, text) == pytest.approx(2.0 / len(zlib.compress(text.encode())))


def test_rouge_recall_on_known_strings():
    # Reference "the cat sat on the mat" (6 tokens); prediction covers "the cat ... the mat" as LCS of 4 tokens.
    scores = M.rouge_recall("the cat lay on a mat", "the cat sat on the mat")
    assert scores["rougeL_recall"] == pytest.approx(4 / 6)
    assert scores["rouge1_recall"] == pytest.approx(4 / 6)
    # Stemming: "writes" matches "writing" -> "write".
    assert M.rouge_recall("She writes books", "she writing books")["rougeL_recall"] == pytest.approx(1.0)
    assert M.rouge_recall("", "anything")["rougeL_recall"] == 0.0


def test_empty_inputs_raise():
    for call in (
        lambda: M.qa_probability([]),
        lambda: M.min_k_score([]),
        lambda: M.mia_auc([], [1.0]),
        lambda: M.truth_ratio(1.0, []),
    ):
        with pytest.raises(ValueError):
            call()
    assert np.isfinite(M.truth_ratio(1000.0, [1.0]))  # tiny p_c: the 1e-10 keeps it finite
