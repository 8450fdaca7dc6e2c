"""The Markov generator against its definition (docs/metrics.md#markov): transition frequencies, sizes, splits, the length-5 variant."""

import numpy as np
import pytest

from hf_unlearn.tasks.markov.data import CHAINS, initial_distribution, make_markov_datasets, transition_matrix


def test_transition_matrix_matches_spec():
    matrix = transition_matrix((3, 4, 5), leakage=0.2)
    assert np.allclose(matrix.sum(axis=1), 1.0)
    assert matrix[3, 4] == pytest.approx(0.8 / 3)
    assert matrix[3, 0] == pytest.approx(0.2 / 7)
    assert np.allclose(matrix[0], 0.1)  # states outside the chain: uniform rows
    init = initial_distribution((0, 1, 2))
    assert init.sum() == pytest.approx(1.0)
    assert init[0] / init[5] == pytest.approx((0.8 / 3) / (0.2 / 7))


def test_sizes_and_splits():
    data = make_markov_datasets(num_retain=100, num_forget1=50, num_forget2=50, seed=0)
    assert {name: len(split) for name, split in data.items()} == {
        "retain_train": 80,
        "retain_test": 20,
        "forget1_train": 40,
        "forget1_test": 10,
        "forget2_train": 40,
        "forget2_test": 10,
    }
    row = data["forget1_train"][0]
    assert len(row["input_ids"]) == 20 and row["labels"] == row["input_ids"] and row["chain"] == "forget1"
    again = make_markov_datasets(num_retain=100, num_forget1=50, num_forget2=50, seed=0)
    assert list(again["retain_test"]["input_ids"]) == list(data["retain_test"]["input_ids"])
    short = make_markov_datasets(num_retain=10, num_forget1=10, num_forget2=10, forget2_length=5, seed=0)
    assert {len(r) for r in short["forget2_train"]["input_ids"]} == {5}
    assert {len(r) for r in short["retain_train"]["input_ids"]} == {20}


@pytest.mark.parametrize("name", list(CHAINS))
def test_empirical_transitions_within_sampling_error(name):
    data = make_markov_datasets(num_retain=2000, num_forget1=2000, num_forget2=2000, seed=7)
    states = np.array(list(data[f"{name}_train"]["input_ids"]) + list(data[f"{name}_test"]["input_ids"]))
    counts = np.zeros((10, 10))
    np.add.at(counts, (states[:, :-1].ravel(), states[:, 1:].ravel()), 1)
    expected = transition_matrix(CHAINS[name])
    for s in range(10):
        n = counts[s].sum()
        if n < 200:
            continue
        freq = counts[s] / n
        # Five binomial standard errors per cell: a wrong row (e.g. leakage misplaced) is far outside.
        tolerance = 5 * np.sqrt(expected[s] * (1 - expected[s]) / n)
        assert np.all(np.abs(freq - expected[s]) <= tolerance), (name, s, freq, expected[s])
    first = np.bincount(states[:, 0], minlength=10) / len(states)
    init = initial_distribution(CHAINS[name])
    assert np.all(np.abs(first - init) <= 5 * np.sqrt(init * (1 - init) / len(states)))


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="leakage"):
        make_markov_datasets(num_retain=10, num_forget1=10, num_forget2=10, leakage=1.5)
    with pytest.raises(ValueError, match="num_forget1"):
        make_markov_datasets(num_retain=10, num_forget1=1, num_forget2=10)
