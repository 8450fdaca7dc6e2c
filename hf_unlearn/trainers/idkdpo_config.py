from dataclasses import dataclass, field

from .base_config import UnlearnConfig

__all__ = ["IdkDPOConfig"]


@dataclass
class IdkDPOConfig(UnlearnConfig):
    r"""
    Configuration of [`IdkDPOTrainer`]: L = γ·(−(2/β)·mean_i log σ(β[r(y_idk) − r(y_f)])) + α·Ret(R), with
    r(y) = log π_θ(y|x) − log π_ref(y|x) summed over the answer tokens, the refusal preferred and the forget answer
    rejected (`docs/methods.md#idkdpo`). Defaults follow the reference toolkit's DPO settings: β = 0.1, γ = α = 1.

    Parameters:
        beta (`float`, *optional*, defaults to `0.1`):
            β: inverse temperature of the preference loss.
        forget_loss_weight (`float`, *optional*, defaults to `1.0`):
            γ: weight of the preference term.
        idk_answers (`list[str]`, `str` or `None`, *optional*, defaults to `None`):
            The preferred refusals, as in [`IdkNLLConfig`].
        idk_token_ids (`list[int]` or `None`, *optional*, defaults to `None`):
            The idk answer's token ids for tokenized rows without a tokenizer, as in [`IdkNLLConfig`].
        reference (`str`, *optional*, defaults to `"live"`):
            Must be `"live"`: the refusal changes every epoch, so π_ref runs on every batch (a frozen copy, or the
            PEFT model with its adapter disabled).
        retain_loss (`str`, *optional*, defaults to `"nll"`):
            Retain term as in [`UnlearnConfig`].
    """

    beta: float = field(default=0.1, metadata={"help": "β: inverse temperature of the DPO loss."})
    forget_loss_weight: float = field(default=1.0, metadata={"help": "γ: weight of the preference term."})
    idk_answers: list[str] | str | None = field(
        default=None, metadata={"help": "Refusals: a list, a text file (one per line), or None for the shipped 100."}
    )
    idk_token_ids: list[int] | None = field(
        default=None, metadata={"help": "Token ids of the idk answer for tokenized rows without a tokenizer."}
    )
    reference: str = field(default="live", metadata={"help": "π_ref on every batch: must be 'live'."})
    retain_loss: str = field(default="nll", metadata={"help": "Retain term Ret(R): 'none', 'nll' or 'kl'."})

    def __post_init__(self):
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}.")
        if self.forget_loss_weight <= 0:
            raise ValueError(f"forget_loss_weight must be > 0, got {self.forget_loss_weight}.")
        if self.reference != "live":
            raise ValueError(
                f"reference={self.reference!r}: IdkDPO needs reference='live' (the refusal paired with each forget "
                "question changes every epoch, so π_ref's log-probs cannot be computed once before training)."
            )
        if self.idk_token_ids is not None and not self.idk_token_ids:
            raise ValueError("idk_token_ids=[] is empty: give the token ids of a refusal, or None.")
        if isinstance(self.idk_answers, list) and not self.idk_answers:
            raise ValueError("idk_answers=[] is empty: give refusals, a path, or None for the shipped list.")
        super().__post_init__()
