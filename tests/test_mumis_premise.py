"""The input sensitivities MU-Mis optimises (`hf_unlearn.evaluation.input_sensitivity`), checked against brute force."""

import numpy as np
import pytest
import torch

from hf_unlearn.evaluation import input_sensitivity as premise
from hf_unlearn.evaluation import mia_auc

from .conftest import tiny_gpt2
from .test_iau_mumis import NO_DROPOUT, brute_force_sensitivity


@pytest.mark.parametrize("output", ["logit", "logprob"])
def test_jacobian_norms_equal_per_position_input_gradients(output):
    """Every (sequence, position, output) squared input-gradient norm, batched and derived from the logit Jacobian
    for log-probs, equals one autograd call per entry; batches of 2 give the same as one batch."""
    model = tiny_gpt2(0, **NO_DROPOUT).double().eval()
    ids = torch.tensor([[1, 2, 3, 4, 5], [0, 0, 1, 9, 3], [7, 7, 7, 2, 1]])
    norms = premise.jacobian_norms(model, ids)[output]
    assert norms.shape == (3, 4, 11)
    for b in range(3):
        example = {"input_ids": ids[b].tolist()}
        for t in (0, 3):
            for k in (0, 4, 10):
                expected = brute_force_sensitivity(model, example, t, k, output)
                assert norms[b, t, k].item() == pytest.approx(expected, rel=1e-9, abs=1e-15)
    torch.testing.assert_close(premise.jacobian_norms(model, ids, batch_size=2)[output], norms)
    torch.testing.assert_close(premise.jacobian_norms(model, ids, positions=[3, 0])[output], norms[:, [3, 0]])


def test_relative_magnitudes_and_auc():
    norms = torch.arange(2 * 2 * 4, dtype=torch.float64).reshape(2, 2, 4)  # (N=2, T-1=2, V=4: 3 states + padding)
    labels = torch.tensor([[0, 1, 2], [0, 2, 0]])  # targets [1, 2] and [2, 0]
    q = premise.relative_magnitudes(norms, labels, num_states=3, seed=0)
    torch.testing.assert_close(q["target"], torch.tensor([(1 + 6) / 2, (10 + 12) / 2], dtype=torch.float64))
    # c' = the mean over the other two states: R per position (1 - 1, 6 - 4.5) and (10 - 8.5, 12 - 13.5)
    torch.testing.assert_close(q["R_states_mean"], torch.tensor([0.75, 0.0], dtype=torch.float64))
    torch.testing.assert_close(q["R_random"], q["target"] - q["other_random"])
    subset = premise.relative_magnitudes(norms[:, [1]], labels, num_states=3, seed=0, positions=[1])
    torch.testing.assert_close(subset["target"], torch.tensor([6.0, 12.0], dtype=torch.float64))
    # The membership AUC of benchmarks/mumis_premise_markov.py: P(R of a seen sequence > R of an unseen one).
    assert mia_auc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 1.0
    assert mia_auc(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.5
