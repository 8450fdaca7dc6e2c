from dataclasses import dataclass, field

from .base_config import UnlearnConfig

__all__ = ["SimNPOConfig"]


@dataclass
class SimNPOConfig(UnlearnConfig):
    r"""
    Configuration of [`SimNPOTrainer`]: L = −(2/β)·mean_i log σ(β(ℓ̄_θ,i − δ))·c + α·Ret(R), with ℓ̄ the
    length-normalised answer NLL (`docs/methods.md#simnpo`). Names are explicit because SimNPO's code calls δ `gamma` and c `coeff`.

    Parameters:
        beta (`float`, *optional*, defaults to `4.5`):
            β: inverse temperature (TOFU reference 4.5; SimNPO's own forget05 value 2.5).
        delta (`float`, *optional*, defaults to `0.0`):
            δ: reward margin subtracted from the length-normalised NLL.
        forget_loss_coefficient (`float`, *optional*, defaults to `0.125`):
            c: weight of the forget term (TOFU reference 0.125; SimNPO's own forget05 value 0.1375).
        retain_loss (`str`, *optional*, defaults to `"nll"`):
            Retain term as in [`UnlearnConfig`].
    """

    beta: float = field(default=4.5, metadata={"help": "β: inverse temperature of the SimNPO loss."})
    delta: float = field(default=0.0, metadata={"help": "δ: margin on the length-normalised NLL (SimNPO's `gamma`)."})
    forget_loss_coefficient: float = field(
        default=0.125, metadata={"help": "c: weight of the forget term (SimNPO's `coeff`)."}
    )
    retain_loss: str = field(default="nll", metadata={"help": "Retain term Ret(R): 'none', 'nll' or 'kl'."})

    def __post_init__(self):
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}.")
        if self.forget_loss_coefficient <= 0:
            raise ValueError(f"forget_loss_coefficient must be > 0, got {self.forget_loss_coefficient}.")
        super().__post_init__()
