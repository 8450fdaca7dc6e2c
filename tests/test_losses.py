"""Every loss against a hand computation on fixed logits."""

import math

import pytest
import torch

from hf_unlearn.trainers import ga_loss, graddiff_loss, imu_loss, normalized_sum, npo_loss, simnpo_loss
from hf_unlearn.trainers.base_trainer import retain_kl
from hf_unlearn.utils import sequence_nll, token_logprobs


def log_softmax_row(row):
    z = math.log(sum(math.exp(v) for v in row))
    return [v - z for v in row]


@pytest.fixture
def fixed():
    # B=2, T=3, V=3; labels: row 0 targets positions 1 and 2, row 1 only position 2 (position 1 ignored).
    logits = torch.tensor(
        [[[1.0, 0.0, -1.0], [0.5, 0.5, 0.0], [2.0, -1.0, 0.0]], [[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]]
    )
    labels = torch.tensor([[-100, 2, 0], [-100, -100, 1]])
    # Hand: position t predicts labels[t+1] from logits[t].
    nll00 = -log_softmax_row([1.0, 0.0, -1.0])[2]
    nll01 = -log_softmax_row([0.5, 0.5, 0.0])[0]
    nll11 = -log_softmax_row([1.0, 2.0, 3.0])[1]
    return logits, labels, (nll00 + nll01, nll11), (2, 1)


def test_sequence_nll_and_token_logprobs(fixed):
    logits, labels, nll, counts = fixed
    total, count = sequence_nll(logits, labels)
    assert torch.allclose(total, torch.tensor(nll), atol=1e-6)
    assert count.tolist() == list(counts)
    logps, mask = token_logprobs(logits, labels)
    assert mask.tolist() == [[True, True], [False, True]]
    assert logps[1, 0].item() == 0.0


def test_ga_loss_is_minus_token_mean(fixed):
    logits, labels, nll, _counts = fixed
    expected = -(nll[0] + nll[1]) / 3
    assert ga_loss(*sequence_nll(logits, labels)).item() == pytest.approx(expected, rel=1e-6)
    # Same as the HF causal-LM loss, negated.
    hf = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 3), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert ga_loss(*sequence_nll(logits, labels)).item() == pytest.approx(-hf.item(), rel=1e-6)


def test_graddiff_loss(fixed):
    logits, labels, nll, _counts = fixed
    loss = graddiff_loss(*sequence_nll(logits, labels), forget_loss_weight=2.0)
    assert loss.item() == pytest.approx(-2.0 * (nll[0] + nll[1]) / 3, rel=1e-6)


def test_npo_loss_by_hand():
    policy, ref, beta = torch.tensor([3.0, 1.0]), torch.tensor([2.0, 2.5]), 0.5
    sig = lambda x: 1 / (1 + math.exp(-x))
    expected = -(2 / beta) * 0.5 * (math.log(sig(0.5 * 1.0)) + math.log(sig(0.5 * -1.5)))
    assert npo_loss(policy, ref, beta).item() == pytest.approx(expected, rel=1e-6)
    # At the start of unlearning (π_θ = π_ref) the loss is (2/β)·log 2.
    assert npo_loss(ref, ref, beta).item() == pytest.approx(2 / beta * math.log(2), rel=1e-6)


def test_simnpo_loss_by_hand(fixed):
    logits, labels, nll, _counts = fixed
    mean_nll = [nll[0] / 2, nll[1] / 1]
    beta, delta, c = 4.5, 0.3, 0.125
    sig = lambda x: 1 / (1 + math.exp(-x))
    expected = -(2 / beta) * c * sum(math.log(sig(beta * (m - delta))) for m in mean_nll) / 2
    total, count = sequence_nll(logits, labels)
    assert simnpo_loss(total / count, beta, delta, c).item() == pytest.approx(expected, rel=1e-6)


def test_retain_kl_masked_by_hand(fixed):
    logits, labels, _, _ = fixed
    ref_logits = torch.zeros_like(logits)  # uniform reference
    # Labelled positions: (0,0), (0,1), (1,1); KL(uniform ‖ p) = Σ (1/3)(log(1/3) − log p).
    rows = [[1.0, 0.0, -1.0], [0.5, 0.5, 0.0], [1.0, 2.0, 3.0]]
    expected = sum(sum((1 / 3) * (math.log(1 / 3) - lp) for lp in log_softmax_row(row)) for row in rows) / 3
    assert retain_kl(ref_logits, logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert retain_kl(logits, logits, labels).item() == pytest.approx(0.0, abs=1e-7)


def test_normalized_sum_by_hand():
    values, weights = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([0.5, 0.0, 1.5])
    assert normalized_sum(values).item() == pytest.approx(7 / 3)
    assert normalized_sum(values, weights).item() == pytest.approx((0.5 + 6.0) / 2.0)
    assert normalized_sum(values, None, 10).item() == pytest.approx(0.7)
    assert normalized_sum(values, weights, 4.0).item() == pytest.approx(6.5 / 4)
    assert normalized_sum(values, torch.zeros(3)).item() == 0.0


def test_losses_of_a_split_batch_add_up_to_the_whole_batch(fixed):
    """With the step's count as `num_items_in_batch`, the two halves of a batch give the whole batch's loss: the
    token mean over 3 labelled tokens, not the mean of the halves' own means (nll₀/2 and nll₁/1)."""
    logits, labels, nll, _counts = fixed
    total, count = sequence_nll(logits, labels)
    halves = [(total[:1], count[:1]), (total[1:], count[1:])]
    assert sum(ga_loss(t, c, num_items_in_batch=3).item() for t, c in halves) == pytest.approx(-(nll[0] + nll[1]) / 3)
    assert sum(ga_loss(t, c).item() for t, c in halves) == pytest.approx(-(nll[0] / 2 + nll[1]))  # per-half means
    weights = torch.tensor([0.25, 1.0])
    whole = imu_loss(total / count, weights).item()
    assert whole == pytest.approx(-(0.25 * nll[0] / 2 + nll[1]) / 1.25)
    split = sum(imu_loss((t / c), w, num_items_in_batch=1.25).item() for (t, c), w in zip(halves, weights.split(1)))
    assert split == pytest.approx(whole)
    policy, ref = torch.tensor([3.0, 1.0]), torch.tensor([2.0, 2.5])
    whole = npo_loss(policy, ref, 0.5).item()
    assert sum(npo_loss(policy[i : i + 1], ref[i : i + 1], 0.5, num_items_in_batch=2).item() for i in (0, 1)) == (
        pytest.approx(whole)
    )
    whole = simnpo_loss(total / count, 4.5, 0.3, 0.125).item()
    split = sum(simnpo_loss(t / c, 4.5, 0.3, 0.125, num_items_in_batch=2).item() for t, c in halves)
    assert split == pytest.approx(whole)
    ref_logits = torch.zeros_like(logits)
    whole = retain_kl(ref_logits, logits, labels).item()
    split = sum(retain_kl(ref_logits[i : i + 1], logits[i : i + 1], labels[i : i + 1], 3).item() for i in (0, 1))
    assert split == pytest.approx(whole)
