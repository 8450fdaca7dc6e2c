from dataclasses import dataclass, field

from .base_config import UnlearnConfig

__all__ = ["SatImpConfig"]


@dataclass
class SatImpConfig(UnlearnConfig):
    r"""
    Configuration of [`SatImpTrainer`]: L = γ·(−(1/N)Σ_{t∈A} w_t ℓ_t) + α·Ret(R), w_t = sg(p_t^{β₁}(1 − p_t)^{β₂})
    (`docs/methods.md#satimp`). Defaults follow the reference toolkit's experiment settings: β₁ = 5, β₂ = 1,
    γ = 0.1, α = 1 (its trainer class and README state γ = 1, α = 0.1, the reverse).

    Parameters:
        beta1 (`float`, *optional*, defaults to `5.0`):
            β₁: exponent of p_t in the token weight (importance of well-predicted tokens).
        beta2 (`float`, *optional*, defaults to `1.0`):
            β₂: exponent of 1 − p_t (saturation: tokens with p_t → 1 get little weight).
        forget_loss_weight (`float`, *optional*, defaults to `0.1`):
            γ: weight of the forget term.
        retain_loss (`str`, *optional*, defaults to `"nll"`):
            Retain term as in [`UnlearnConfig`]; `retain_loss_weight` α defaults to 1.
    """

    beta1: float = field(default=5.0, metadata={"help": "β₁: exponent of p_t in the token weight."})
    beta2: float = field(default=1.0, metadata={"help": "β₂: exponent of (1 − p_t) in the token weight."})
    forget_loss_weight: float = field(default=0.1, metadata={"help": "γ: weight of the forget term."})
    retain_loss: str = field(default="nll", metadata={"help": "Retain term Ret(R): 'none', 'nll' or 'kl'."})

    def __post_init__(self):
        for name in ("beta1", "beta2"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.forget_loss_weight <= 0:
            raise ValueError(f"forget_loss_weight must be > 0, got {self.forget_loss_weight}.")
        super().__post_init__()
