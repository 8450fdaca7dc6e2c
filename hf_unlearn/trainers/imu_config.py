from dataclasses import dataclass, field

from ..influence import InfluenceWeighting
from .base_config import TRAINABLE, UnlearnConfig

__all__ = ["IMUConfig"]


@dataclass
class IMUConfig(UnlearnConfig):
    r"""
    Configuration of [`IMUTrainer`]: influence-weighted gradient ascent, L = −Σ_{i∈Df⁺} ŵ_i ℓ_i
    (`docs/methods.md#imu`, `docs/influence.md`).

    Parameters:
        influence_weighting (`dict`, *optional*, defaults to the paper's settings):
            As in [`UnlearnConfig`], but on by default: a mapping of [`~hf_unlearn.influence.InfluenceWeighting`]
            fields (`psi`, `top_ratio`, `update_epochs`, `curvature`, `damping`, `clip_quantile`, the controls
            `permutation_seed` / `uniform`, ...); keys left out take the paper's defaults (ψ = sqrt, r = 1, scores
            computed once on the Fisher diagonal of the head). `None` is refused: IMU without weights is GA.
        trainable (`str`, *optional*, defaults to `"head"`):
            As in [`UnlearnConfig`], with the paper's default: only the LM head moves (paper Alg. 1).
        head_l1_weight (`float`, *optional*, defaults to `0.0`):
            α of an L1 penalty α‖θ_head‖₁ on the head, added once per optimizer step (the authors' code: 0.002 on
            Markov). Off in the paper.

    IMU is GA with `influence_weighting` (`docs/methods.md#influence-weighting`); to weight another method's loss
    (IMU-NPO, IMU-SimNPO), set `influence_weighting` on that method's config.
    """

    influence_weighting: dict | None = field(
        default_factory=dict, metadata={"help": "Influence weighting (InfluenceWeighting fields; {}: paper defaults)."}
    )
    trainable: str = field(
        default="head", metadata={"help": f"Parameters updated: one of {TRAINABLE} ('head': paper)."}
    )
    head_l1_weight: float = field(default=0.0, metadata={"help": "α of an L1 penalty on the head (authors: 0.002)."})

    def __post_init__(self):
        if self.head_l1_weight < 0:
            raise ValueError(f"head_l1_weight must be >= 0, got {self.head_l1_weight}.")
        if self.influence_weighting is None:
            raise ValueError("IMUConfig needs influence_weighting (IMU without influence weights is GA: use GAConfig).")
        self.influence_weighting = InfluenceWeighting.from_value(self.influence_weighting).to_dict()
        super().__post_init__()
