"""Datasets: the synthetic Markov task, TOFU, and forget/retain pairing."""

from .markov import CHAINS, initial_distribution, make_markov_datasets, transition_matrix
from .pairing import ForgetRetainDataset, UnlearnCollator, pad_examples, validate_lm_dataset

__all__ = [
    "CHAINS",
    "ForgetRetainDataset",
    "UnlearnCollator",
    "initial_distribution",
    "make_markov_datasets",
    "pad_examples",
    "transition_matrix",
    "validate_lm_dataset",
]
