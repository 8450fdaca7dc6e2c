from dataclasses import dataclass, field

from ..influence import CURVATURES, PSI_CHOICES
from .base_config import TRAINABLE, UnlearnConfig
from .influence_weighting import InfluenceWeighting

__all__ = ["IMUConfig"]


@dataclass
class IMUConfig(UnlearnConfig):
    r"""
    Configuration of [`IMUTrainer`]: influence-weighted gradient ascent, L = −Σ_{i∈Df⁺} ŵ_i ℓ_i
    (`docs/methods.md#imu`, `docs/influence.md`).

    Parameters:
        psi (`str`, *optional*, defaults to `"sqrt"`):
            ψ applied to the positive scores before normalisation: `"none"`, `"sqrt"` (paper), `"tanh"`, `"exp"`.
        top_ratio (`float`, *optional*, defaults to `1.0`):
            r: keep only the top-r fraction of the forget set by score (paper Table 3: 0.05 already forgets).
        influence_update_epochs (`int`, *optional*, defaults to `0`):
            ν: recompute the scores from the current model every ν epochs; 0 computes them once before the first
            step (paper default).
        trainable (`str`, *optional*, defaults to `"head"`):
            As in [`UnlearnConfig`], with the paper's default: only the LM head moves (paper Alg. 1).
        influence_curvature (`str`, *optional*, defaults to `"fisher_diag"`):
            Curvature of the head: `"fisher_diag"` (paper), `"exact"` (tiny heads), `"kfac"`.
        influence_damping (`float`, *optional*, defaults to `0.1`):
            λ added to the curvature, relative to its mean diagonal when `influence_relative_damping`.
        influence_relative_damping (`bool`, *optional*, defaults to `True`):
            Whether λ is relative to the curvature's mean diagonal (else absolute; the authors' code uses 0.01).
        influence_batch_size (`int`, *optional*, defaults to `8`):
            Forget samples per forward pass of the influence computation.
        weight_clip_quantile (`float` or `None`, *optional*, defaults to `None`):
            Cap the weights at this quantile (the authors' code: 0.93). Off in the paper.
        head_l1_weight (`float`, *optional*, defaults to `0.0`):
            α of an L1 penalty α‖θ_head‖₁ on the head (the authors' code: 0.002 on Markov). Off in the paper.
        weight_permutation_seed (`int` or `None`, *optional*, defaults to `None`):
            A control, not a method: randomly permute the weights across forget samples with this seed. If IMU with
            permuted weights does as well as IMU, the influence scores carry no information.
        uniform_weights (`bool`, *optional*, defaults to `False`):
            A control, not a method: weight 1 on the same kept samples (top-r of Df⁺), separating *which* samples
            from *how much* each weighs.

    IMU is GA with `influence_weighting` (`docs/methods.md#influence-weighting`): these flat fields are the paper's
    preset and fill `influence_weighting`; to weight another method's loss (IMU-NPO, IMU-SimNPO), set
    `influence_weighting` on that method's config.
    """

    psi: str = field(default="sqrt", metadata={"help": f"ψ on positive influence scores: one of {PSI_CHOICES}."})
    top_ratio: float = field(default=1.0, metadata={"help": "r: keep the top-r fraction of samples by score."})
    influence_update_epochs: int = field(
        default=0, metadata={"help": "ν: recompute scores every ν epochs (0: once before training)."}
    )
    trainable: str = field(
        default="head", metadata={"help": f"Parameters updated: one of {TRAINABLE} ('head': paper)."}
    )
    influence_curvature: str = field(
        default="fisher_diag", metadata={"help": f"Head curvature for the scores: one of {CURVATURES}."}
    )
    influence_damping: float = field(default=0.1, metadata={"help": "λ: damping of the head curvature."})
    influence_relative_damping: bool = field(
        default=True, metadata={"help": "λ relative to the curvature's mean diagonal (else absolute)."}
    )
    influence_batch_size: int = field(default=8, metadata={"help": "Samples per influence forward pass."})
    weight_clip_quantile: float | None = field(
        default=None, metadata={"help": "Clip weights at this quantile (authors' code: 0.93); None: off."}
    )
    head_l1_weight: float = field(default=0.0, metadata={"help": "α of an L1 penalty on the head (authors: 0.002)."})
    weight_permutation_seed: int | None = field(
        default=None, metadata={"help": "Control: permute the weights across samples with this seed; None: off."}
    )
    uniform_weights: bool = field(
        default=False, metadata={"help": "Control: weight 1 on every kept sample (same top-r subset)."}
    )

    def __post_init__(self):
        if self.head_l1_weight < 0:
            raise ValueError(f"head_l1_weight must be >= 0, got {self.head_l1_weight}.")
        preset = {
            "psi": self.psi,
            "top_ratio": self.top_ratio,
            "update_epochs": self.influence_update_epochs,
            "curvature": self.influence_curvature,
            "damping": self.influence_damping,
            "relative_damping": self.influence_relative_damping,
            "batch_size": self.influence_batch_size,
            "clip_quantile": self.weight_clip_quantile,
            "permutation_seed": self.weight_permutation_seed,
            "uniform": self.uniform_weights,
        }
        given = self.influence_weighting
        if (
            given is not None
            and InfluenceWeighting.from_value(given).to_dict() != InfluenceWeighting(**preset).to_dict()
        ):
            raise ValueError(
                "IMUConfig sets influence_weighting from its own fields (psi, top_ratio, ...): set those instead."
            )
        self.influence_weighting = preset
        super().__post_init__()
