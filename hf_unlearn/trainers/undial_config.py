from dataclasses import dataclass, field

from .base_config import UnlearnConfig

__all__ = ["UNDIALConfig"]


@dataclass
class UNDIALConfig(UnlearnConfig):
    r"""
    Configuration of [`UNDIALTrainer`] (self-distillation with adjusted logits): L = γ·(1/N)Σ_{t∈A} CE(q_t, π_θ(·|t))
    + α·Ret(R), q_t = softmax(z_t^ref − β·e_{y_t}) from the frozen initial model (`docs/methods.md#undial`). Defaults
    follow the reference toolkit's UNDIAL settings: β = 10, γ = 1, no retain term (it also uses lr 1e-4).

    Parameters:
        beta (`float`, *optional*, defaults to `10.0`):
            β: how much the labelled token's reference logit is lowered (the reference's grid: 3, 10, 30).
        forget_loss_weight (`float`, *optional*, defaults to `1.0`):
            γ: weight of the distillation term.
        retain_loss (`str`, *optional*, defaults to `"none"`):
            Retain term as in [`UnlearnConfig`].
    """

    beta: float = field(default=10.0, metadata={"help": "β: logit adjustment of the labelled token in the target."})
    forget_loss_weight: float = field(default=1.0, metadata={"help": "γ: weight of the distillation term."})

    def __post_init__(self):
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}.")
        if self.forget_loss_weight <= 0:
            raise ValueError(f"forget_loss_weight must be > 0, got {self.forget_loss_weight}.")
        super().__post_init__()
