"""Datasets: the synthetic Markov task, TOFU, and forget/retain pairing."""

from .markov import CHAINS, initial_distribution, make_markov_datasets, transition_matrix
from .pairing import ForgetRetainDataset, UnlearnCollator, pad_examples, validate_lm_dataset
from .tofu import TOFU_CONFIGS, format_qa, load_tofu, tokenize_tofu

__all__ = [
    "CHAINS",
    "TOFU_CONFIGS",
    "ForgetRetainDataset",
    "UnlearnCollator",
    "format_qa",
    "initial_distribution",
    "load_tofu",
    "make_markov_datasets",
    "pad_examples",
    "tokenize_tofu",
    "transition_matrix",
    "validate_lm_dataset",
]
