"""Synthetic Markov-chain unlearning task (SimNPO §7, IMU appendix B.4; SPEC §4).

Ten states; the retain distribution mostly moves inside {0,1,2}, forget-1 inside {3,4,5}, forget-2 inside {6,7,8}, each
leaking to the other states with total probability ε. A model trained on retain ∪ forget-1 must forget both forget
chains while keeping the retain chain.
"""

from __future__ import annotations

import numpy as np
from datasets import Dataset, DatasetDict

__all__ = ["CHAINS", "initial_distribution", "make_markov_datasets", "transition_matrix"]

CHAINS = {"retain": (0, 1, 2), "forget1": (3, 4, 5), "forget2": (6, 7, 8)}


def transition_matrix(chain: tuple[int, ...], num_states: int = 10, leakage: float = 0.2) -> np.ndarray:
    """P[s, j] = (1−ε)/|C| for j ∈ C, ε/(num_states−|C|) otherwise, for s ∈ C; rows of s ∉ C are uniform."""
    _check_chain(chain, num_states, leakage)
    matrix = np.full((num_states, num_states), 1.0 / num_states)
    inside = np.zeros(num_states, dtype=bool)
    inside[list(chain)] = True
    row = np.where(inside, (1 - leakage) / len(chain), leakage / (num_states - len(chain)))
    matrix[list(chain)] = row
    return matrix


def initial_distribution(chain: tuple[int, ...], num_states: int = 10, leakage: float = 0.2) -> np.ndarray:
    """(1−ε)/|C| on the chain's states, ε/(num_states−|C|) elsewhere, normalised."""
    _check_chain(chain, num_states, leakage)
    inside = np.isin(np.arange(num_states), chain)
    weights = np.where(inside, (1 - leakage) / len(chain), leakage / (num_states - len(chain)))
    return weights / weights.sum()


def sample_sequences(
    rng: np.random.Generator, chain: tuple[int, ...], count: int, length: int, num_states: int, leakage: float
) -> np.ndarray:
    """`(count, length)` state sequences of the chain, sampled step by step for all sequences at once."""
    transitions = transition_matrix(chain, num_states, leakage)
    cumulative = np.cumsum(transitions, axis=1)
    states = np.empty((count, length), dtype=np.int64)
    states[:, 0] = rng.choice(num_states, size=count, p=initial_distribution(chain, num_states, leakage))
    for t in range(1, length):
        uniform = rng.random(count)[:, None]  # (count, 1)
        states[:, t] = np.minimum((uniform > cumulative[states[:, t - 1]]).sum(axis=1), num_states - 1)
    return states


def make_markov_datasets(
    num_retain: int = 10_000,
    num_forget1: int = 5_000,
    num_forget2: int = 5_000,
    length: int = 20,
    forget2_length: int | None = None,
    leakage: float = 0.2,
    num_states: int = 10,
    test_fraction: float = 0.2,
    seed: int = 42,
) -> DatasetDict:
    """Retain, forget-1 and forget-2 sequences, each split 80/20 into `{name}_train` / `{name}_test`.

    Every row has `input_ids` (the states), `labels` (equal to `input_ids`: every next state is a target; the causal
    shift happens in the loss) and `chain` (`"retain"`, `"forget1"` or `"forget2"`). `forget2_length` gives the
    forget-2 sequences another length (SPEC §4's length-5 variant, which exposes NPO's length bias).
    """
    sizes = {"retain": num_retain, "forget1": num_forget1, "forget2": num_forget2}
    lengths = {"retain": length, "forget1": length, "forget2": forget2_length or length}
    for name, size in sizes.items():
        if size < 2:
            raise ValueError(f"num_{name} must be >= 2 to split into train and test, got {size}.")
        if lengths[name] < 2:
            raise ValueError(f"The {name} sequence length must be >= 2 (a target needs a context), got {lengths[name]}.")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    rng = np.random.default_rng(seed)
    splits = {}
    for name, chain in CHAINS.items():
        states = sample_sequences(rng, chain, sizes[name], lengths[name], num_states, leakage)
        order = rng.permutation(len(states))
        num_test = max(1, round(test_fraction * len(states)))
        for split, rows in (("train", order[num_test:]), ("test", order[:num_test])):
            ids = states[rows].tolist()
            splits[f"{name}_{split}"] = Dataset.from_dict({"input_ids": ids, "labels": ids, "chain": [name] * len(ids)})
    return DatasetDict(splits)


def _check_chain(chain: tuple[int, ...], num_states: int, leakage: float) -> None:
    if not 0 <= leakage < 1:
        raise ValueError(f"leakage must be in [0, 1), got {leakage}.")
    if not chain or len(chain) >= num_states or any(not 0 <= s < num_states for s in chain):
        raise ValueError(f"chain {chain} must be a non-empty proper subset of the {num_states} states.")
