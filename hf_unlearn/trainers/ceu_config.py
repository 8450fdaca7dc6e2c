from dataclasses import dataclass, field

from .base_config import UnlearnConfig

__all__ = ["CEUConfig"]


@dataclass
class CEUConfig(UnlearnConfig):
    r"""
    Configuration of [`CEUTrainer`] (cross-entropy unlearning): L = γ·(1/N)Σ_{t∈A} CE(q_t, π_θ(·|t)) + α·Ret(R),
    q_t the model's own detached distribution with the labelled token removed (`docs/methods.md#ce-u`). Defaults
    follow the reference toolkit: no retain term, the first answer token of each sequence left out.

    Parameters:
        ignore_first_answer_tokens (`int`, *optional*, defaults to `1`):
            n: the first n answer tokens of each sequence are left out of the loss (every sequence must have at least
            n labelled tokens, so that the step's count is exact).
        forget_loss_weight (`float`, *optional*, defaults to `1.0`):
            γ: weight of the forget term.
        retain_loss (`str`, *optional*, defaults to `"none"`):
            Retain term as in [`UnlearnConfig`].
    """

    ignore_first_answer_tokens: int = field(
        default=1, metadata={"help": "n: leave out the first n answer tokens of each sequence."}
    )
    forget_loss_weight: float = field(default=1.0, metadata={"help": "γ: weight of the forget term."})

    def __post_init__(self):
        if self.ignore_first_answer_tokens < 0:
            raise ValueError(f"ignore_first_answer_tokens must be >= 0, got {self.ignore_first_answer_tokens}.")
        if self.forget_loss_weight <= 0:
            raise ValueError(f"forget_loss_weight must be > 0, got {self.forget_loss_weight}.")
        super().__post_init__()
