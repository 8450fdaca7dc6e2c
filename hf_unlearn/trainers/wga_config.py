from dataclasses import dataclass, field

from .base_config import UnlearnConfig

__all__ = ["WGAConfig"]


@dataclass
class WGAConfig(UnlearnConfig):
    r"""
    Configuration of [`WGATrainer`] (weighted gradient ascent): L = γ·(−(1/N)Σ_{t∈A} sg(p_t^β)·ℓ_t) + α·Ret(R), with
    p_t the model's probability of the labelled token t, ℓ_t = −log p_t and N the step's labelled forget tokens
    (`docs/methods.md#wga`). Defaults follow the reference toolkit's WGA settings (β = 1, γ = α = 1, retain NLL).

    Parameters:
        beta (`float`, *optional*, defaults to `1.0`):
            β: exponent of the token weight p_t^β (0 gives gradient ascent).
        forget_loss_weight (`float`, *optional*, defaults to `1.0`):
            γ: weight of the forget term.
        retain_loss (`str`, *optional*, defaults to `"nll"`):
            Retain term as in [`UnlearnConfig`].
    """

    beta: float = field(default=1.0, metadata={"help": "β: exponent of the token weight sg(p_t^β)."})
    forget_loss_weight: float = field(default=1.0, metadata={"help": "γ: weight of the forget term."})
    retain_loss: str = field(default="nll", metadata={"help": "Retain term Ret(R): 'none', 'nll' or 'kl'."})

    def __post_init__(self):
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}.")
        if self.forget_loss_weight <= 0:
            raise ValueError(f"forget_loss_weight must be > 0, got {self.forget_loss_weight}.")
        super().__post_init__()
