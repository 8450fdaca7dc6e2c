"""hf-unlearn: machine unlearning for Hugging Face language models."""

__version__ = "0.1.0"

from .data import load_tofu, make_markov_datasets, tokenize_tofu  # noqa: E402
from .evaluation import evaluate_tofu  # noqa: E402
from .influence import influence_weights, lm_head_influence  # noqa: E402
from .trainers import (  # noqa: E402
    METHODS,
    GAConfig,
    GATrainer,
    GradDiffConfig,
    GradDiffTrainer,
    IMUConfig,
    IMUTrainer,
    NPOConfig,
    NPOTrainer,
    SimNPOConfig,
    SimNPOTrainer,
    UnlearnConfig,
    UnlearnTrainer,
)

__all__ = [
    "METHODS",
    "GAConfig",
    "GATrainer",
    "GradDiffConfig",
    "GradDiffTrainer",
    "IMUConfig",
    "IMUTrainer",
    "NPOConfig",
    "NPOTrainer",
    "SimNPOConfig",
    "SimNPOTrainer",
    "UnlearnConfig",
    "UnlearnTrainer",
    "evaluate_tofu",
    "influence_weights",
    "lm_head_influence",
    "load_tofu",
    "make_markov_datasets",
    "tokenize_tofu",
    "__version__",
]
