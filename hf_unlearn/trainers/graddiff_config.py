from dataclasses import dataclass, field

from .base_config import UnlearnConfig

__all__ = ["GradDiffConfig"]


@dataclass
class GradDiffConfig(UnlearnConfig):
    r"""
    Configuration of [`GradDiffTrainer`]: L = γ·(−CE(F)) + α·Ret(R) (`docs/methods.md#graddiff`; reference γ = α = 1).

    Parameters:
        forget_loss_weight (`float`, *optional*, defaults to `1.0`):
            γ: weight of the gradient-ascent term.
        retain_loss (`str`, *optional*, defaults to `"nll"`):
            Retain term (`"nll"` or `"kl"`); GradDiff without one is GA.
    """

    forget_loss_weight: float = field(default=1.0, metadata={"help": "γ: weight of the gradient-ascent forget term."})
    retain_loss: str = field(default="nll", metadata={"help": "Retain term Ret(R): 'nll' or 'kl'."})

    def __post_init__(self):
        if self.retain_loss == "none":
            raise ValueError("GradDiff needs a retain term: retain_loss must be 'nll' or 'kl' (use GA for none).")
        if self.forget_loss_weight <= 0:
            raise ValueError(f"forget_loss_weight must be > 0, got {self.forget_loss_weight}.")
        super().__post_init__()
