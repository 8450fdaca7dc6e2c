"""Arguments of the LM-head influence engine, as one documented dataclass (kronfluence's `ScoreArguments` split)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .weights import PSI_CHOICES

__all__ = ["CURVATURES", "InfluenceArguments", "InfluenceWeighting"]

CURVATURES = ("fisher_diag", "exact", "kfac")


@dataclass
class InfluenceArguments:
    """How `lm_head_influence` computes Δ_i = (1/N)·⟨g_f, H⁻¹ G_i⟩ (IMU paper eq. 4, `docs/influence.md`) on the LM head.

    Fields marked `affects_scores` change the result; the others only change speed or memory, so saved scores are
    reused across them (`load_influence` compares only the former).

    Parameters:
        curvature (`str`, defaults to `"fisher_diag"`):
            H. `"fisher_diag"`: F = (1/N) Σ_i G_i ⊙ G_i + λ, the paper's implementation. `"exact"`: the exact head
            Hessian (1/N) Σ_i Σ_t [diag(p_t) − p_t p_tᵀ] ⊗ h̃_t h̃_tᵀ + λI (paper eq. 16), explicit, tiny heads only.
            `"kfac"`: diag(s) ⊗ C + λI with s = E[p − p²] (the diagonal of the output factor) and C = E[h̃ h̃ᵀ];
            its off-diagonal output terms are dropped because a V×V factor is out of reach for LLM vocabularies.
        damping (`float`, defaults to `0.1`):
            λ. With `relative_damping` it is a multiple of the mean diagonal of H (kronfluence's heuristic scale),
            otherwise an absolute value (the IMU authors' code uses an absolute 0.01 on the Fisher diagonal).
        relative_damping (`bool`, defaults to `True`):
            Whether `damping` is relative to the mean diagonal of the undamped curvature.
        batch_size (`int`, defaults to `8`):
            Samples per forward pass.
        max_chunk_bytes (`int`, defaults to 256 MiB):
            Memory budget of one block of head math: per-sample V×(d+1) gradients (fisher_diag) and per-token
            V-sized probability rows. A block always holds at least one sample.
        cache_features (`bool`, defaults to `True`):
            Keep the head inputs h_t of labelled tokens from pass 1 so pass 2 needs no second forward pass
            (memory: labelled tokens × d floats, on the head's device).
        exact_max_params (`int`, defaults to `8192`):
            Largest head size V·(d+1) accepted by `curvature="exact"` (its matrix has that many squared entries).
        sort_by_length (`bool`, defaults to `True`):
            Batch samples of similar length together (less padding); scores are returned in dataset order anyway.
        shard_across_ranks (`bool`, defaults to `True`):
            When `torch.distributed` is initialised, split the dataset across ranks and all-reduce the statistics.
        progress_bar (`bool`, defaults to `True`):
            Show tqdm bars for the passes (rank 0 only).
    """

    curvature: str = field(
        default="fisher_diag",
        metadata={"help": f"Curvature H of the head: one of {CURVATURES}.", "affects_scores": True},
    )
    damping: float = field(
        default=0.1,
        metadata={"help": "λ added to H (relative to its mean diagonal if relative_damping).", "affects_scores": True},
    )
    relative_damping: bool = field(
        default=True,
        metadata={"help": "λ = damping × mean diag(H) instead of an absolute value.", "affects_scores": True},
    )
    batch_size: int = field(default=8, metadata={"help": "Samples per forward pass.", "affects_scores": False})
    max_chunk_bytes: int = field(
        default=256 * 2**20,
        metadata={"help": "Memory budget of one block of head math, in bytes.", "affects_scores": False},
    )
    cache_features: bool = field(
        default=True,
        metadata={"help": "Reuse pass-1 head inputs in pass 2 instead of a second forward.", "affects_scores": False},
    )
    exact_max_params: int = field(
        default=8192,
        metadata={"help": "Largest V·(d+1) for curvature='exact'.", "affects_scores": False},
    )
    sort_by_length: bool = field(
        default=True, metadata={"help": "Batch similar lengths together.", "affects_scores": False}
    )
    shard_across_ranks: bool = field(
        default=True, metadata={"help": "Shard over torch.distributed ranks.", "affects_scores": False}
    )
    progress_bar: bool = field(default=True, metadata={"help": "Show tqdm progress bars.", "affects_scores": False})

    def __post_init__(self) -> None:
        if self.curvature not in CURVATURES:
            raise ValueError(f"curvature={self.curvature!r} is not supported; choose one of {list(CURVATURES)}.")
        if not (self.damping >= 0.0) or self.damping == float("inf"):
            raise ValueError(f"damping={self.damping!r} must be a finite number >= 0.")
        for name in ("batch_size", "max_chunk_bytes", "exact_max_params"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> InfluenceArguments:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def score_fields(self) -> dict[str, Any]:
        """The fields that change the scores: what a saved result must match to be reused."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("affects_scores")}


@dataclass
class InfluenceWeighting(InfluenceArguments):
    """The `influence_weighting` option of every unlearning config: how the LM-head scores are computed (the fields of
    [`InfluenceArguments`]) and how they become IMU's per-sample weights ŵ_i (`docs/methods.md#influence-weighting`).

    Parameters:
        psi (`str`, defaults to `"sqrt"`):
            ψ applied to the positive scores before normalisation: `"none"`, `"sqrt"` (IMU paper), `"tanh"`, `"exp"`.
        top_ratio (`float`, defaults to `1.0`):
            r: keep only the top-r fraction of the forget set by score (IMU paper Table 3: 0.05 already forgets).
        update_epochs (`int`, defaults to `0`):
            ν: recompute the scores from the current model every ν epochs; 0 computes them once before the first
            step and draws only samples with positive weight.
        clip_quantile (`float` or `None`, defaults to `None`):
            Cap the weights at this quantile (the IMU authors' code: 0.93; off in the paper).
        permutation_seed (`int` or `None`, defaults to `None`):
            Control, not a method: permute the weights across forget samples with this seed. Equal results mean the
            scores carry no information about *which* samples matter.
        uniform (`bool`, defaults to `False`):
            Control, not a method: weight 1 for every kept sample (the same top-r subset of Df⁺), so the effect of
            *how much* each sample weighs is separable from *which* samples are kept.

    The scores' own fields (`curvature`, `damping`, `relative_damping`, `batch_size`, ...) are those of
    [`InfluenceArguments`], declared there once.
    """

    psi: str = field(default="sqrt", metadata={"help": f"ψ on positive influence scores: one of {PSI_CHOICES}."})
    top_ratio: float = field(default=1.0, metadata={"help": "r: keep the top-r fraction of samples by score."})
    update_epochs: int = field(default=0, metadata={"help": "ν: recompute scores every ν epochs (0: once)."})
    clip_quantile: float | None = field(default=None, metadata={"help": "Clip weights at this quantile; None: off."})
    permutation_seed: int | None = field(default=None, metadata={"help": "Control: permute the weights."})
    uniform: bool = field(default=False, metadata={"help": "Control: weight 1 on every kept sample."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.psi not in PSI_CHOICES:
            raise ValueError(f"influence_weighting.psi={self.psi!r} is not one of {PSI_CHOICES}.")
        if not 0 < self.top_ratio <= 1:
            raise ValueError(f"influence_weighting.top_ratio must be in (0, 1], got {self.top_ratio}.")
        if self.update_epochs < 0:
            raise ValueError(f"influence_weighting.update_epochs must be >= 0, got {self.update_epochs}.")
        if self.clip_quantile is not None and not 0 < self.clip_quantile <= 1:
            raise ValueError(f"influence_weighting.clip_quantile must be in (0, 1] or None, got {self.clip_quantile}.")
        if self.uniform and self.permutation_seed is not None:
            raise ValueError("influence_weighting: choose one control, uniform or permutation_seed, not both.")

    @classmethod
    def from_value(cls, value: InfluenceWeighting | dict[str, Any] | None) -> InfluenceWeighting | None:
        """From a config's mapping (unknown keys named), an instance, or None (no weighting)."""
        if value is None or isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"influence_weighting must be a mapping of {cls.field_names()}, got {value!r}.")
        unknown = sorted(set(value) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"influence_weighting: unknown keys {unknown}; the keys are {cls.field_names()}.")
        return cls(**value)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def score_arguments(self, **overrides: Any) -> InfluenceArguments:
        """The [`InfluenceArguments`] part (what `compute_influence` takes), with `overrides` (e.g. `progress_bar`)."""
        names = {f.name for f in dataclasses.fields(InfluenceArguments)}
        return InfluenceArguments(**{**{k: v for k, v in self.to_dict().items() if k in names}, **overrides})
