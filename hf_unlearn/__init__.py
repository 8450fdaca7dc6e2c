"""hf-unlearn: machine unlearning for Hugging Face language models."""

__version__ = "0.1.0"
