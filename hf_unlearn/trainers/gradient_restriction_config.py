"""Settings of the gradient-restricted training loss, importable without torch (recipes are checked before it loads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["GRADIENT_NORMS", "GradientRestriction"]

GRADIENT_NORMS = ("l2", "per_tensor")


@dataclass
class GradientRestriction:
    """Settings of the gradient-restricted training loss ℓ + α‖∇_θ ℓ‖ (a recipe section; absent = plain training).

    Parameters:
        weight (`float`, *optional*, defaults to `0.005`):
            α of eq. 7 (the authors' code default, on CIFAR-10).
        norm (`str`, *optional*, defaults to `"l2"`):
            `"l2"`: the global ‖∇_θ ℓ‖₂ over every trainable parameter (the paper's eq. 7); `"per_tensor"`: the sum of
            each parameter tensor's L2 norm (the authors' code).
    """

    weight: float = field(default=0.005, metadata={"help": "α: weight of the gradient-norm penalty (eq. 7)."})
    norm: Literal["l2", "per_tensor"] = field(
        default="l2", metadata={"help": "'l2' (global norm, paper) or 'per_tensor' (sum of tensor norms, authors)."}
    )

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"gradient restriction weight must be >= 0, got {self.weight}.")
        if self.norm not in GRADIENT_NORMS:
            raise ValueError(f"gradient restriction norm={self.norm!r} is not one of {GRADIENT_NORMS}.")
