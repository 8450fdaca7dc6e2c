from dataclasses import dataclass, field

from .base_config import UnlearnConfig

__all__ = ["IdkNLLConfig"]


@dataclass
class IdkNLLConfig(UnlearnConfig):
    r"""
    Configuration of [`IdkNLLTrainer`]: L = γ·CE(x_f, y_idk) + α·Ret(R), the token-mean NLL of a refusal ("I don't
    know") as the answer to each forget question, plus the retain term (`docs/methods.md#idknll`).

    Parameters:
        forget_loss_weight (`float`, *optional*, defaults to `1.0`):
            γ: weight of the idk NLL.
        idk_answers (`list[str]`, `str` or `None`, *optional*, defaults to `None`):
            The refusals, one drawn per forget example, epoch and seed: a list of strings, a path to a text file
            (one per line), or None for the 100 shipped with the package (`hf_unlearn/data/idk_answers.txt`).
        idk_token_ids (`list[int]` or `None`, *optional*, defaults to `None`):
            For already-tokenized rows without a tokenizer (e.g. the Markov task): the token ids of the one idk
            answer that replaces every forget row's labelled part. Takes precedence over `idk_answers`.
        retain_loss (`str`, *optional*, defaults to `"nll"`):
            Retain term as in [`UnlearnConfig`].
    """

    forget_loss_weight: float = field(default=1.0, metadata={"help": "γ: weight of the idk NLL term."})
    idk_answers: list[str] | str | None = field(
        default=None, metadata={"help": "Refusals: a list, a text file (one per line), or None for the shipped 100."}
    )
    idk_token_ids: list[int] | None = field(
        default=None, metadata={"help": "Token ids of the idk answer for tokenized rows without a tokenizer."}
    )
    retain_loss: str = field(default="nll", metadata={"help": "Retain term Ret(R): 'none', 'nll' or 'kl'."})

    def __post_init__(self):
        if self.forget_loss_weight <= 0:
            raise ValueError(f"forget_loss_weight must be > 0, got {self.forget_loss_weight}.")
        if self.idk_token_ids is not None and not self.idk_token_ids:
            raise ValueError("idk_token_ids=[] is empty: give the token ids of a refusal, or None.")
        if isinstance(self.idk_answers, list) and not self.idk_answers:
            raise ValueError("idk_answers=[] is empty: give refusals, a path, or None for the shipped list.")
        super().__post_init__()
