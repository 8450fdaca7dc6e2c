"""From removal scores Δ_i to IMU sample weights ŵ_i (IMU paper eq. 5-6, Table 3; `docs/influence.md#weights`)."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["PSI_CHOICES", "influence_weights"]

PSI_CHOICES = ("none", "sqrt", "tanh", "exp")


def influence_weights(
    scores: Any, psi: str = "sqrt", top_ratio: float = 1.0, clip_quantile: float | None = None
) -> torch.Tensor:
    """IMU weights `(N,)`: ŵ_i ∝ ψ(max(0, Δ_i)) on the kept samples of Df⁺ = {Δ > 0}, exactly 0 elsewhere.

    Steps (paper eq. 6 with its top-r ablation, plus the authors' optional quantile clip):

    1. w_i = max(0, Δ_i); only Df⁺ = {i : Δ_i > 0} can get weight.
    2. `top_ratio` r keeps the k = max(1, ⌈r·N⌉) highest scores (ties: lower index first), intersected with Df⁺.
    3. ψ on the kept w: `"none"` w, `"sqrt"` √w (paper default), `"tanh"` tanh(w / max w), `"exp"` exp(w / max w)
       (a softmax over the kept samples once normalised). tanh and exp see w / max w because |Δ| ≪ 1 in practice
       (Δ carries a 1/N and the curvature's scale), where tanh ≈ identity and exp ≈ uniform; the rescaling makes
       every ψ invariant to the overall scale of Δ, as none and sqrt already are after normalisation.
    4. `clip_quantile` q (the authors' code: 0.93; off by default) caps ψ-values at their q-quantile over the
       kept samples (linear interpolation, like `torch.quantile`).
    5. Normalise to mean 1 over the kept samples, so learning rates stay comparable to GA (`docs/influence.md#weights`); the paper's
       ŵ_i = ψ(w_i) / Σ_j ψ(w_j) is this divided by the number kept.

    Raises:
        ValueError: empty or non-finite scores, an unknown `psi`, `top_ratio`/`clip_quantile` outside (0, 1], or no
            sample with Δ > 0.

    >>> influence_weights(torch.tensor([4.0, 1.0, -2.0]), psi="sqrt")
    tensor([1.3333, 0.6667, 0.0000])
    """
    scores = torch.as_tensor(scores)
    if not scores.is_floating_point():
        scores = scores.to(torch.float64)
    scores = scores.reshape(-1)
    n = scores.numel()
    if n == 0:
        raise ValueError("influence_weights got no scores: the forget set is empty.")
    bad = int((~torch.isfinite(scores)).sum())
    if bad:
        raise ValueError(
            f"{bad} of {n} influence scores are NaN or infinite; recompute them (check the model's "
            "loss on the forget set and the damping)."
        )
    if psi not in PSI_CHOICES:
        raise ValueError(f"psi={psi!r} is not supported; choose one of {list(PSI_CHOICES)}.")
    if not 0.0 < top_ratio <= 1.0:
        raise ValueError(f"top_ratio={top_ratio!r} must be in (0, 1].")
    if clip_quantile is not None and not 0.0 < clip_quantile <= 1.0:
        raise ValueError(f"clip_quantile={clip_quantile!r} must be in (0, 1] or None.")

    positive = scores > 0  # (N,) Df⁺
    num_positive = int(positive.sum())
    if num_positive == 0:
        raise ValueError(
            f"No forget sample has a positive influence score (0 of {n} have Δ > 0; max Δ = {float(scores.max()):.3g}),"
            " so IMU has nothing to weight. Check that the model actually fits the forget set, try another damping or "
            "curvature, or fall back to uniform weights (GA)."
        )
    keep = positive
    if top_ratio < 1.0:
        k = max(1, math.ceil(top_ratio * n - 1e-9))  # the tolerance keeps 0.1 * 30 from rounding up to 4
        order = torch.argsort(scores, descending=True, stable=True)
        top = torch.zeros_like(positive)
        top[order[:k]] = True
        keep = positive & top

    w = scores[keep]  # (K,) all > 0
    if psi == "none":
        values = w
    elif psi == "sqrt":
        values = w.sqrt()
    elif psi == "tanh":
        values = torch.tanh(w / w.max())
    else:  # exp: exp(w/max - 1) is the same softmax, without overflow
        values = torch.exp(w / w.max() - 1.0)
    if clip_quantile is not None and values.numel() > 1:
        values = values.clamp(max=torch.quantile(values, clip_quantile))

    weights = torch.zeros_like(scores)
    weights[keep] = values * (values.numel() / values.sum())
    return weights
