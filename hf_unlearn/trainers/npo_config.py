from dataclasses import dataclass, field

from .base_config import UnlearnConfig

__all__ = ["NPOConfig"]


@dataclass
class NPOConfig(UnlearnConfig):
    r"""
    Configuration of [`NPOTrainer`]: L = −(2/β)·mean_i log σ(β(ℓ_θ,i − ℓ_ref,i)) + α·Ret(R), with ℓ the summed answer
    NLL of a sequence (`docs/methods.md#npo`; the reference always adds the retain NLL: `retain_loss="none"` gives retain-free NPO).

    Parameters:
        beta (`float`, *optional*, defaults to `0.1`):
            β: inverse temperature of the preference loss.
        retain_loss (`str`, *optional*, defaults to `"nll"`):
            Retain term as in [`UnlearnConfig`].
    """

    beta: float = field(default=0.1, metadata={"help": "β: inverse temperature of the NPO loss."})
    retain_loss: str = field(default="nll", metadata={"help": "Retain term Ret(R): 'none', 'nll' or 'kl'."})

    def __post_init__(self):
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}.")
        super().__post_init__()
