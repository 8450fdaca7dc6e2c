"""Synthetic Markov-chain unlearning task (SimNPO §7, IMU appendix B.4; `docs/metrics.md#markov`).

Ten states; the retain distribution mostly moves inside {0,1,2}, forget-1 inside {3,4,5}, forget-2 inside {6,7,8}, each
leaking to the other states with total probability ε. A model trained on retain ∪ forget-1 must forget both forget
chains while keeping the retain chain.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from datasets import Dataset, DatasetDict

__all__ = ["CHAINS", "MarkovDataArguments", "initial_distribution", "make_markov_datasets", "transition_matrix"]

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


@dataclass
class MarkovDataArguments:
    """The data of the Markov task (the recipe's `data` section).

    Parameters:
        num_retain, num_forget1, num_forget2 (`int`, defaults to 10,000 / 5,000 / 5,000):
            Sequences of the retain, forget-1 and forget-2 chains, each split into train and test.
        length (`int`, defaults to `20`):
            States per sequence.
        forget2_length (`int` or `None`, defaults to `None`):
            Another length for the forget-2 sequences (the length-5 variant exposes NPO's length bias).
        leakage (`float`, defaults to `0.2`):
            ε: each chain's total probability of moving outside its states.
        num_states (`int`, defaults to `10`):
            States of the vocabulary (the model adds one padding id).
        test_fraction (`float`, defaults to `0.2`):
            Share of each chain's sequences held out as its test set.
    """

    num_retain: int = field(default=10_000, metadata={"help": "Retain-chain sequences."})
    num_forget1: int = field(default=5_000, metadata={"help": "Forget-1-chain sequences (seen by the original model)."})
    num_forget2: int = field(default=5_000, metadata={"help": "Forget-2-chain sequences (unseen unless 'all')."})
    length: int = field(default=20, metadata={"help": "States per sequence."})
    forget2_length: int | None = field(default=None, metadata={"help": "Another length for forget-2 sequences."})
    leakage: float = field(default=0.2, metadata={"help": "ε: probability of leaving the chain's states."})
    num_states: int = field(default=10, metadata={"help": "Number of states."})
    test_fraction: float = field(default=0.2, metadata={"help": "Held-out share of each chain."})

    def __post_init__(self) -> None:
        sizes = {"retain": self.num_retain, "forget1": self.num_forget1, "forget2": self.num_forget2}
        for name, size in sizes.items():
            if size < 2:
                raise ValueError(f"num_{name} must be >= 2 to split into train and test, got {size}.")
        for name, value in (("length", self.length), ("forget2_length", self.forget2_length or self.length)):
            if value < 2:
                raise ValueError(f"{name} must be >= 2 (a target needs a context), got {value}.")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}.")
        _check_chain(CHAINS["retain"], self.num_states, self.leakage)


def make_markov_datasets(args: MarkovDataArguments | None = None, *, seed: int = 42, **overrides) -> DatasetDict:
    """Retain, forget-1 and forget-2 sequences, each split into `{name}_train` / `{name}_test` (`test_fraction`).

    `overrides` replace fields of `args` (e.g. `make_markov_datasets(num_retain=100)`). Every row has `input_ids`
    (the states), `labels` (equal to `input_ids`: every next state is a target; the causal shift happens in the loss)
    and `chain` (`"retain"`, `"forget1"` or `"forget2"`).
    """
    args = dataclasses.replace(args or MarkovDataArguments(), **overrides)
    sizes = {"retain": args.num_retain, "forget1": args.num_forget1, "forget2": args.num_forget2}
    lengths = {"retain": args.length, "forget1": args.length, "forget2": args.forget2_length or args.length}
    num_states, leakage, test_fraction = args.num_states, args.leakage, args.test_fraction
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
