"""hf-unlearn: machine unlearning for Hugging Face language models."""

__version__ = "0.1.0"

from .data import make_markov_datasets  # noqa: E402
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
    "make_markov_datasets",
    "__version__",
]
