from dataclasses import dataclass, field

from .base_config import UnlearnConfig

__all__ = ["MEGDConfig"]


@dataclass
class MEGDConfig(UnlearnConfig):
    r"""
    Configuration of [`MEGDTrainer`] (maximum entropy on the forget set, gradient descent on the retain set):
    L = γ·(1/N)Σ_{t∈A} KL(U ‖ π_θ(·|t)) + α·CE(R), U uniform over the vocabulary (`docs/methods.md#megd`). Defaults
    follow the authors' script: γ = 0.1, α = 1, retain NLL (lr 1e-5, 5 epochs).

    Parameters:
        forget_loss_weight (`float`, *optional*, defaults to `0.1`):
            γ: weight of the maximum-entropy term.
        retain_loss (`str`, *optional*, defaults to `"nll"`):
            Retain term as in [`UnlearnConfig`] (GD is `"nll"`; `"none"` leaves ME alone).
    """

    forget_loss_weight: float = field(default=0.1, metadata={"help": "γ: weight of the maximum-entropy term."})
    retain_loss: str = field(default="nll", metadata={"help": "Retain term Ret(R): 'nll' (GD), 'kl' or 'none'."})

    def __post_init__(self):
        if self.forget_loss_weight <= 0:
            raise ValueError(f"forget_loss_weight must be > 0, got {self.forget_loss_weight}.")
        super().__post_init__()
