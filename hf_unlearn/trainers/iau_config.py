from dataclasses import dataclass, field

from .base_config import UnlearnConfig

__all__ = ["IAUConfig"]

NORMALIZATIONS = ("sum", "mean")


@dataclass
class IAUConfig(UnlearnConfig):
    r"""
    Configuration of [`IAUTrainer`]: θ ← θ − η·(Σ_{i∈Dr} ∇ℓ_i − Σ_{j∈Df} ∇ℓ_j) (IAU paper eq. 8), every sum over the
    whole set, ℓ_i the length-normalised answer NLL of example i (`docs/methods.md#iau`). One optimizer step is one
    pass over Df ∪ Dr: the trainer sets `gradient_accumulation_steps` to that pass's micro-batches.

    The defaults make one step exactly eq. 8: plain SGD, no momentum, weight decay or gradient clipping, constant η.
    The authors' code takes one Adam step instead (`optim="adamw_torch"`, `weight_decay=0`): Adam's first step moves
    every parameter by about ±η whatever its gradient's size, a sign step rather than eq. 8.

    Parameters:
        normalization (`str`, *optional*, defaults to `"sum"`):
            How the two gradient sums are scaled: `"sum"` (paper eq. 8: plain sums, so η must shrink as the sets
            grow, and the larger set dominates) or `"mean"` (each sum divided by its own set's size, the authors'
            code: mean cross-entropy of each set, the two sets weighed equally).
        max_retain_examples (`int` or `None`, *optional*, defaults to `None`):
            Use only a seeded random subset of this many retain examples for Σ_{Dr} (`None`: all of Dr, the paper).
            With `"mean"` the subset's mean estimates Dr's; it bounds the cost of the pass on a large Dr.
        max_steps (`int`, *optional*, defaults to `1`):
            Number of IAU updates, each a full pass over Df ∪ Dr at the current θ (1: the paper's single step).
        learning_rate (`float`, *optional*, defaults to `1e-5`):
            η. With `"sum"` the step grows with |Df| and |Dr|: tune η per task.
        optim (`str`, *optional*, defaults to `"sgd"`):
            Plain SGD makes the step exactly eq. 8.
        weight_decay (`float`, *optional*, defaults to `0.0`), max_grad_norm (`float`, *optional*, defaults to `0.0`),
        lr_scheduler_type (`str`, *optional*, defaults to `"constant"`):
            Off / off / constant: eq. 8 has no decay, no clipping and one η. Warm-up is refused (it would make the
            first, and by default only, step a zero step).
    """

    normalization: str = field(
        default="sum",
        metadata={"help": f"Scaling of Σ_Dr ∇ℓ and Σ_Df ∇ℓ: one of {NORMALIZATIONS} ('sum' = paper eq. 8)."},
    )
    max_retain_examples: int | None = field(
        default=None, metadata={"help": "Use a seeded random subset of this many retain examples; None: all of Dr."}
    )
    max_steps: int = field(default=1, metadata={"help": "IAU updates, each a full pass over Df ∪ Dr (paper: 1)."})
    optim: str = field(default="sgd", metadata={"help": "Optimizer; plain SGD makes a step exactly eq. 8."})
    weight_decay: float = field(default=0.0, metadata={"help": "Weight decay (eq. 8: none)."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping (eq. 8: none; 0 disables)."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "η schedule (eq. 8: constant)."})

    def __post_init__(self):
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization={self.normalization!r} is not one of {NORMALIZATIONS}.")
        if self.max_retain_examples is not None and self.max_retain_examples < 1:
            raise ValueError(f"max_retain_examples must be >= 1 or None, got {self.max_retain_examples}.")
        if self.retain_loss != "none":
            raise ValueError(
                f"retain_loss={self.retain_loss!r}: IAU's update already sums the retain gradients (eq. 8); "
                "leave retain_loss='none'."
            )
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 (each step is one full IAU update), got {self.max_steps}.")
        if (self.warmup_steps or 0) > 0 or (getattr(self, "warmup_ratio", None) or 0) > 0:
            raise ValueError(
                "IAU takes a few full-set steps (by default one): warm-up would make the first a zero step; set "
                "warmup_steps=0 (and warmup_ratio=0)."
            )
        if self.gradient_accumulation_steps != 1:
            raise ValueError(
                "gradient_accumulation_steps is set by IAUTrainer (the micro-batches of one pass over Df ∪ Dr); "
                f"leave it at 1, got {self.gradient_accumulation_steps}."
            )
        super().__post_init__()
