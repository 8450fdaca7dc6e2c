"""Min-K++, Reference and GradNorm: each score against a value computed by hand, the model pass against a brute-force
loop over the vocabulary and autograd, and the three reported by the TOFU evaluation beside LOSS, ZLib and Min-K."""

import json
import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hf_unlearn.cli import main
from hf_unlearn.evaluation.metrics import mia_auc
from hf_unlearn.evaluation.mia import (
    gradnorm_score,
    min_k_plus_plus_score,
    next_token_statistics,
    reference_score,
    sequence_attack_scores,
)
from hf_unlearn.evaluation.tofu import TofuEvalArguments

from .tofu_helpers import FIXTURE_DIR, save_tiny_model


def test_min_k_plus_plus_by_hand():
    # z = (log p − μ)/σ = ((-1+1.5)/0.5, (-2+1.5)/1, (-3+1.5)/2) = (1, -0.5, -0.75)
    logps, means, stds = [-1.0, -2.0, -3.0], [-1.5, -1.5, -1.5], [0.5, 1.0, 2.0]
    assert min_k_plus_plus_score(logps, means, stds, k=0.4) == pytest.approx(0.75)  # ⌊0.4·3⌋ = 1: the smallest z
    assert min_k_plus_plus_score(logps, means, stds, k=1.0) == pytest.approx(-(1 - 0.5 - 0.75) / 3)
    assert min_k_plus_plus_score([-1.0], [-1.0], [0.0]) == 0.0  # a one-hot distribution: z = 0
    with pytest.raises(ValueError, match="one mean and std per token"):
        min_k_plus_plus_score([-1.0, -2.0], [-1.0], [1.0])


def test_next_token_statistics_by_hand():
    logits = torch.log(torch.tensor([[0.75, 0.25]]))
    mean, std = next_token_statistics(logits)
    mu = 0.75 * math.log(0.75) + 0.25 * math.log(0.25)
    var = 0.75 * (math.log(0.75) - mu) ** 2 + 0.25 * (math.log(0.25) - mu) ** 2
    assert mean.item() == pytest.approx(mu) and mean.item() == pytest.approx(-0.562335, abs=1e-6)
    assert std.item() == pytest.approx(math.sqrt(var)) and std.item() == pytest.approx(0.475713, abs=1e-6)


def test_reference_and_gradnorm_by_hand():
    assert reference_score(2.0, 1.5) == 0.5
    assert reference_score(1.0, 1.5) == -0.5  # the target finds the answer likelier than the reference: a member
    # ‖(3, 4)‖ = 5, ‖[[1, 0], [0, 0]]‖ = 1, the missing gradient skipped: mean 3
    assert gradnorm_score([torch.tensor([3.0, 4.0]), None, torch.tensor([[1.0, 0.0], [0.0, 0.0]])]) == 3.0


def tiny_gpt2(seed):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=7, n_positions=16, n_embd=8, n_layer=1, n_head=2)).eval()


def test_the_model_pass_matches_a_brute_force_computation():
    model, reference = tiny_gpt2(0), tiny_gpt2(1)
    context, answer = [1, 2, 3], [4, 5, 6, 0]
    got = sequence_attack_scores(
        model, [(context, answer)], ["min_k_plus_plus", "gradnorm", "reference"], k=1.0, reference_model=reference
    )[0]

    def answer_logps(net):
        with torch.no_grad():
            logits = net(torch.tensor([context + answer])).logits[0].double()
        rows = []
        for t, token in enumerate(answer):  # position len(context)-1+t predicts answer[t]
            probs = torch.softmax(logits[len(context) - 1 + t], -1).tolist()
            rows.append((math.log(probs[token]), probs))
        return rows

    z = []
    for logp, probs in answer_logps(model)[:-1]:  # Min-K++ leaves the end-of-turn token out, as Min-K does
        mu = sum(p * math.log(p) for p in probs)
        sigma = math.sqrt(sum(p * (math.log(p) - mu) ** 2 for p in probs))
        z.append((logp - mu) / sigma)
    assert got["mia_min_k_plus_plus"] == pytest.approx(-np.mean(z), rel=1e-9)
    nll = -np.mean([logp for logp, _ in answer_logps(model)])
    ref_nll = -np.mean([logp for logp, _ in answer_logps(reference)])
    assert got["mia_reference"] == pytest.approx(nll - ref_nll, rel=1e-9)
    logits = model(torch.tensor([context + answer])).logits[0]
    loss = -torch.log_softmax(logits[len(context) - 1 : -1], -1)[torch.arange(len(answer)), torch.tensor(answer)].mean()
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    norms = [g.norm().item() for g in grads if g is not None]
    assert got["mia_gradnorm"] == pytest.approx(sum(norms) / len(norms), rel=1e-5)
    assert all(p.grad is None for p in model.parameters()) and not model.training


def test_reference_needs_its_model():
    with pytest.raises(ValueError, match="'reference' but no mia_reference_model"):
        TofuEvalArguments(mia_attacks=["reference"])
    with pytest.raises(ValueError, match="Unknown MIA attack"):
        TofuEvalArguments(mia_attacks=["min_k_plus"])


def test_the_tofu_evaluation_reports_all_six_attacks(tmp_path):
    model = save_tiny_model(tmp_path / "m")
    attacks = ["min_k", "loss", "zlib", "min_k_plus_plus", "gradnorm", "reference"]
    argv = ["eval", "--model", str(model), "--data-dir", str(FIXTURE_DIR), "--output-dir", str(tmp_path / "e")]
    argv += ["--no-compute-rouge", "--quiet", "--max-items", "3", "--mia-attacks", *attacks]
    assert main([*argv, "--mia-reference-model", str(model)]) == 0
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    items = json.loads((tmp_path / "e" / "items.json").read_text())["splits"]
    for attack in attacks:
        forget = [item[f"mia_{attack}"] for item in items["forget"]]
        holdout = [item[f"mia_{attack}"] for item in items["holdout"]]
        assert summary[f"mia_{attack}"] == pytest.approx(mia_auc(forget, holdout))
    # The model is its own reference: every Reference score is 0 (up to float rounding).
    assert max(abs(item["mia_reference"]) for item in items["forget"]) < 1e-6
