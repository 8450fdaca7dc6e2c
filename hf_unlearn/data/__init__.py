"""Data for unlearning trainers: chat formatting of question/answer pairs, plain-text chunks and forget/retain pairing."""

from .chat import ChatFormat, encode_prompt_answer, format_qa, tokenize_dataset
from .pairing import ForgetRetainDataset, UnlearnCollator, pad_examples, validate_lm_dataset
from .text import chunk_text_dataset

__all__ = [
    "ChatFormat",
    "ForgetRetainDataset",
    "UnlearnCollator",
    "chunk_text_dataset",
    "encode_prompt_answer",
    "format_qa",
    "pad_examples",
    "tokenize_dataset",
    "validate_lm_dataset",
]
