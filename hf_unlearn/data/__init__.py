"""Data for unlearning trainers: chat formatting of question/answer pairs and forget/retain pairing."""

from .chat import ChatFormat, encode_prompt_answer, format_qa, tokenize_dataset
from .pairing import ForgetRetainDataset, UnlearnCollator, pad_examples, validate_lm_dataset

__all__ = [
    "ChatFormat",
    "ForgetRetainDataset",
    "UnlearnCollator",
    "encode_prompt_answer",
    "format_qa",
    "pad_examples",
    "tokenize_dataset",
    "validate_lm_dataset",
]
