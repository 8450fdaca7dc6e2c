"""Markov metrics against brute-force loops over sequences and positions."""

import math

import numpy as np
import pytest
import torch

from hf_unlearn.evaluation.metrics import kl_per_position
from hf_unlearn.tasks.markov.data import CHAINS, make_markov_datasets, transition_matrix
from hf_unlearn.tasks.markov.evaluation import MarkovEvaluator

from .conftest import PAD, tiny_gpt2


def test_kl_per_position_by_hand():
    p = torch.tensor([0.5, 0.25, 0.25]).log()
    q = torch.tensor([0.25, 0.5, 0.25]).log()
    expected = 0.5 * math.log(2) + 0.25 * math.log(0.5)
    assert kl_per_position(p, q).item() == pytest.approx(expected, rel=1e-6)


def brute_force(model, retrained, examples, chain):
    """Loop over sequences and positions: (mean NLL, mean KL to retrained, mean KL to the true row)."""
    truth = transition_matrix(CHAINS[chain])
    nll, kl, truth_kl = [], [], []
    for example in examples:
        ids = torch.tensor([example["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0], -1)
            ref = torch.log_softmax(retrained(input_ids=ids).logits[0], -1)
        for t in range(len(example["input_ids"]) - 1):
            nll.append(-logp[t, example["input_ids"][t + 1]].item())
            kl.append(
                sum(ref[t, v].exp().item() * (ref[t, v].item() - logp[t, v].item()) for v in range(logp.shape[1]))
            )
            row = truth[example["input_ids"][t]]
            truth_kl.append(sum(row[v] * (math.log(row[v]) - logp[t, v].item()) for v in range(10)))
    return np.mean(nll), np.mean(kl), np.mean(truth_kl)


def test_evaluator_matches_brute_force():
    data = make_markov_datasets(num_retain=10, num_forget1=10, num_forget2=10, forget2_length=5, seed=0)
    model, retrained = tiny_gpt2(seed=1).eval(), tiny_gpt2(seed=2).eval()
    test_sets = {name: data[f"{name}_test"] for name in CHAINS}
    metrics = MarkovEvaluator(test_sets, retrained, PAD, batch_size=1)(model)
    for name in CHAINS:
        nll, kl, truth_kl = brute_force(model, retrained, test_sets[name], name)
        assert metrics[f"{name}_loss"] == pytest.approx(nll, rel=1e-5)
        assert metrics[f"{name}_kl"] == pytest.approx(kl, rel=1e-4)
        assert metrics[f"{name}_truth_kl"] == pytest.approx(truth_kl, rel=1e-5)
    # The forget group pools the positions of both forget chains (lengths 20 and 5 here).
    n1, n2 = 2 * 19, 2 * 4
    pooled = (metrics["forget1_loss"] * n1 + metrics["forget2_loss"] * n2) / (n1 + n2)
    assert metrics["forget_loss"] == pytest.approx(pooled, rel=1e-6)
    assert MarkovEvaluator(test_sets, model, PAD)(model)["retain_kl"] == pytest.approx(0.0, abs=1e-6)


def test_retain_kl_at_forget_kl_interpolates():
    from hf_unlearn.tasks.markov.evaluation import retain_kl_at_forget_kl

    history = [
        {"forget_kl": 0.0, "retain_kl": 0.0},
        {"forget_kl": 1.0, "retain_kl": 0.2},
        {"forget_kl": 3.0, "retain_kl": 1.0},
    ]
    assert retain_kl_at_forget_kl(history, 2.0) == pytest.approx(0.6)
    assert retain_kl_at_forget_kl(history, 1.0) == pytest.approx(0.2)
    assert retain_kl_at_forget_kl(history, 0.0) == pytest.approx(0.0)
    assert retain_kl_at_forget_kl(history, 3.5) is None


def test_value_at_level_on_a_falling_measure():
    """Forget Q_A prob falls as a model forgets: `falling=True` reads the first crossing downwards (by hand)."""
    from hf_unlearn.evaluation import value_at_level

    history = [
        {"forget_Q_A_Prob": 0.8, "utility": 0.4},
        {"forget_Q_A_Prob": 0.5, "utility": 0.35},
        {"forget_Q_A_Prob": 0.6, "utility": 0.3},
        {"forget_Q_A_Prob": 0.2, "utility": 0.2},
    ]
    read = lambda level: value_at_level(history, "forget_Q_A_Prob", "utility", level, falling=True)
    assert read(0.9) == pytest.approx(0.4)  # already below at the start
    assert read(0.6) == pytest.approx(0.4 + (0.2 / 0.3) * (0.35 - 0.4))  # first crossing, not the later 0.6
    assert read(0.3) == pytest.approx(0.3 + (0.3 / 0.4) * (0.2 - 0.3))  # 0.6 -> 0.2 crosses 0.3 three quarters along
    assert read(0.1) is None
