from dataclasses import dataclass, field

from .base_config import UnlearnConfig

__all__ = ["MUMisConfig"]

SENSITIVITY_OUTPUTS = ("logit", "logprob")
STOP_THRESHOLD_TYPES = ("relative", "absolute")


@dataclass
class MUMisConfig(UnlearnConfig):
    r"""
    Configuration of [`MUMisTrainer`]: minimise L = mean_{x∈F} mean_t (‖∇_x f_{c_t}‖² − ‖∇_x f_{c'_t}‖²), x the
    input embeddings of a forget sequence, c_t the labelled next token at answer position t, c'_t a uniformly random
    other token, f the output at position t (`docs/methods.md#mu-mis`; MU-Mis paper eq. 1, Algorithm 1).

    Parameters:
        sensitivity_output (`str`, *optional*, defaults to `"logit"`):
            f: `"logit"` (the paper: "the logit output of the target class") or `"logprob"` (log-softmax). A shift
            shared by all logits changes no prediction but moves both gradients, and the logit objective can be
            lowered through it alone; log-probabilities have no such direction.
        positions_per_sequence (`int` or `None`, *optional*, defaults to `None`):
            Answer positions per sequence whose sensitivities are computed: `None` (all, the exact objective) or k
            (k positions drawn at random per sequence and step, the cheap estimate). The cost grows linearly with the
            positions: each one is a separate row of the double-backward pass.
        stop_threshold (`float` or `None`, *optional*, defaults to `None`):
            δ: stop once the objective's drop ΔL̃ since the start reaches δ (Algorithm 1). `None`: run all `max_steps`
            (T_MU).
        stop_threshold_type (`str`, *optional*, defaults to `"relative"`):
            `"relative"`: ΔL̃ = (L̃_0 − L̃)/|L̃_0|, scale-free; `"absolute"`: ΔL̃ = L̃_0 − L̃ in the objective's own units
            per example (Algorithm 1 as written: (L̃_0 − L̃)/|Df| with L̃ summed over Df). L̃ is the mean per-example
            objective over the steps since the last check, L̃_0 the same at the initial model, measured before the
            first step.
        stop_check_steps (`int` or `None`, *optional*, defaults to `None`):
            Check the stopping rule every this many optimizer steps; `None`: at the end of every epoch (Algorithm 1's
            iteration is one pass over Df).
        initial_objective_examples (`int` or `None`, *optional*, defaults to `None`):
            Forget examples (the first ones) on which L̃_0 is measured; `None`: all. Only used with `stop_threshold`.
        retain_loss (`str`, *optional*, defaults to `"none"`):
            As in [`UnlearnConfig`]; MU-Mis is retain-free.
    """

    sensitivity_output: str = field(
        default="logit", metadata={"help": f"f whose input gradient is taken: one of {SENSITIVITY_OUTPUTS}."}
    )
    positions_per_sequence: int | None = field(
        default=None, metadata={"help": "Answer positions per sequence (None: all; k: k random ones, cheaper)."}
    )
    stop_threshold: float | None = field(
        default=None, metadata={"help": "δ: stop when the objective's drop reaches δ (None: run max_steps)."}
    )
    stop_threshold_type: str = field(
        default="relative", metadata={"help": f"How the drop is measured: one of {STOP_THRESHOLD_TYPES}."}
    )
    stop_check_steps: int | None = field(
        default=None, metadata={"help": "Check the stopping rule every N steps (None: every epoch)."}
    )
    initial_objective_examples: int | None = field(
        default=None, metadata={"help": "Forget examples for the initial objective L̃_0 (None: all)."}
    )

    def __post_init__(self):
        if self.sensitivity_output not in SENSITIVITY_OUTPUTS:
            raise ValueError(f"sensitivity_output={self.sensitivity_output!r} is not one of {SENSITIVITY_OUTPUTS}.")
        if self.stop_threshold_type not in STOP_THRESHOLD_TYPES:
            raise ValueError(f"stop_threshold_type={self.stop_threshold_type!r} is not one of {STOP_THRESHOLD_TYPES}.")
        for name in ("positions_per_sequence", "stop_check_steps", "initial_objective_examples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}.")
        if self.stop_threshold is not None and self.stop_threshold <= 0:
            raise ValueError(f"stop_threshold must be > 0 or None, got {self.stop_threshold}.")
        super().__post_init__()
