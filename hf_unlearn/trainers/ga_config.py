from dataclasses import dataclass

from .base_config import UnlearnConfig

__all__ = ["GAConfig"]


@dataclass
class GAConfig(UnlearnConfig):
    r"""
    Configuration of [`GATrainer`] (gradient ascent). GA has no hyperparameter of its own: the loss is
    −CE(F), the token-mean NLL of the forget batch, negated. See [`UnlearnConfig`] for the shared fields
    (`retain_loss` defaults to `"none"`).
    """
