from dataclasses import dataclass, field

from .base_config import UnlearnConfig

__all__ = ["PDUConfig"]


@dataclass
class PDUConfig(UnlearnConfig):
    r"""
    Configuration of [`PDUTrainer`] (primal–dual unlearning): min L_f subject to CE(R) ≤ ε, through
    L = γ·L_f + λ·(CE(R) − ε) with the dual variable λ ← max(0, λ + η·(CE(R) − ε)) after every optimizer step once
    the warm-up is over (`docs/methods.md#pdu`). L_f = (1/N)Σ_{t∈A}(max_v z_{t,v} − mean_v z_{t,v})² flattens the
    forget answers' logits. The reference toolkit leaves ε to the user ("a bit above the initial retain loss"); its
    community TOFU runs use ε = 0.3, λ₀ = 100, η = 5.

    Parameters:
        retain_loss_bound (`float`, *required*):
            ε: the bound on the retain NLL.
        retain_loss_weight (`float`, *optional*, defaults to `1.0`):
            λ₀: the initial dual variable (the reference's α).
        dual_step_size (`float`, *optional*, defaults to `1.0`):
            η: step size of the dual ascent.
        dual_warmup_epochs (`int`, *optional*, defaults to `5`):
            λ stays at λ₀ during the first epochs (the reference's warm-up).
        forget_loss_weight (`float`, *optional*, defaults to `1.0`):
            γ: weight of the forget term.
        retain_loss (`str`, *optional*, defaults to `"nll"`):
            Must be `"nll"`: the constraint is on the retain NLL.
    """

    retain_loss_bound: float | None = field(default=None, metadata={"help": "ε: bound on the retain NLL (required)."})
    dual_step_size: float = field(default=1.0, metadata={"help": "η: step size of the dual update of λ."})
    dual_warmup_epochs: int = field(default=5, metadata={"help": "Epochs before λ is first updated."})
    forget_loss_weight: float = field(default=1.0, metadata={"help": "γ: weight of the forget term."})
    retain_loss: str = field(default="nll", metadata={"help": "Must be 'nll': the constraint is CE(R) ≤ ε."})
    retain_loss_weight: float | None = field(default=1.0, metadata={"help": "λ₀: the initial dual variable."})

    def __post_init__(self):
        if self.retain_loss_bound is None:
            raise ValueError(
                "PDU needs retain_loss_bound (ε, the bound on the retain NLL): set it a bit above the initial "
                "retain loss."
            )
        if self.retain_loss != "nll":
            raise ValueError(f"retain_loss={self.retain_loss!r}: PDU's constraint is on the retain NLL ('nll').")
        if self.dual_step_size < 0:
            raise ValueError(f"dual_step_size must be >= 0, got {self.dual_step_size}.")
        if self.dual_warmup_epochs < 0:
            raise ValueError(f"dual_warmup_epochs must be >= 0, got {self.dual_warmup_epochs}.")
        if self.forget_loss_weight <= 0:
            raise ValueError(f"forget_loss_weight must be > 0, got {self.forget_loss_weight}.")
        super().__post_init__()
