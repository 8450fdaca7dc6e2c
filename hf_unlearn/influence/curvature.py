"""Streaming accumulators for the forget-set gradient g_f and the head curvature H (IMU paper eq. 4, 16;
`docs/influence.md`).

Every accumulator sees blocks of scored tokens: probabilities p_t `(m, V)`, targets y_t `(m,)`, augmented head
inputs h̃_t = [h_t, 1] (the 1 only when the head has a bias) `(m, d1)`, weights c_t `(m,)` and per-sample token
counts. It sums Σ_i G_i and its curvature statistics; after `finalize(N)` (and, across ranks, an all-reduce of
`state()` before it), `solve()` returns A = H⁻¹ g_f `(V, d1)`, with which Δ_i = (1/N) Σ_t c_t (p_t − e_{y_t})ᵀ A h̃_t.
"""

from __future__ import annotations

import torch

__all__ = ["ExactHessian", "FisherDiagonal", "KFACDiagonal", "make_curvature"]


def _errors_(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """In place: p_t − e_{y_t}, the gradient of softmax cross-entropy w.r.t. the logits."""
    probs[torch.arange(probs.shape[0], device=probs.device), targets] -= 1.0
    return probs


class _Curvature:
    """Common part: Σ_i G_i = Σ_t c_t (p_t − e_{y_t}) h̃_tᵀ, one matmul per block."""

    def __init__(self, vocab: int, d1: int, dtype: torch.dtype, device: torch.device) -> None:
        self.vocab, self.d1 = vocab, d1
        self.grad = torch.zeros(vocab, d1, dtype=dtype, device=device)  # (V, d1) Σ_i G_i, then g_f
        self.damping = 0.0

    def update(
        self,
        probs: torch.Tensor,
        targets: torch.Tensor,
        feats: torch.Tensor,
        weight: torch.Tensor,
        counts: torch.Tensor,
    ) -> None:
        """Add one block; may overwrite `probs`."""
        self._update_stats(probs, feats, weight, counts)
        errors = _errors_(probs, targets)  # (m, V)
        self.grad.addmm_(errors.T, feats * weight[:, None])  # (V, d1)

    def _update_stats(self, probs, feats, weight, counts) -> None:
        raise NotImplementedError

    def state(self) -> list[torch.Tensor]:
        """Sums to all-reduce across ranks (in place)."""
        raise NotImplementedError

    def finalize(self, num_samples: int, damping: float, relative: bool) -> None:
        """Turn sums into means, then fix the absolute λ (relative: damping × mean diagonal of H)."""
        for t in self.state():
            t.div_(num_samples)
        self.damping = damping * float(self.mean_diagonal()) if relative else damping

    def mean_diagonal(self) -> torch.Tensor:
        raise NotImplementedError

    def solve(self) -> torch.Tensor:
        raise NotImplementedError


class FisherDiagonal(_Curvature):
    """F = (1/N) Σ_i G_i ⊙ G_i + λ: the paper's per-sample empirical Fisher diagonal.

    Needs each G_i `(V, d1)`: tokens arrive grouped by sample, so G_i = E_iᵀ (c ⊙ H̃_i) is one matmul into a reused
    buffer, followed by fused `add_`/`addcmul_` into the sums; only one V×d1 gradient exists at a time.
    """

    def __init__(self, vocab: int, d1: int, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__(vocab, d1, dtype, device)
        self.fisher = torch.zeros(vocab, d1, dtype=dtype, device=device)  # (V, d1)
        self._buffer = torch.empty(vocab, d1, dtype=dtype, device=device)  # (V, d1) one G_i

    def update(self, probs, targets, feats, weight, counts) -> None:
        errors = _errors_(probs, targets)  # (m, V)
        scaled = feats * weight[:, None]  # (m, d1) c_t h̃_t
        start = 0
        for n in counts.tolist():
            torch.mm(errors[start : start + n].T, scaled[start : start + n], out=self._buffer)  # (V, d1) G_i
            self.grad.add_(self._buffer)
            self.fisher.addcmul_(self._buffer, self._buffer)
            start += n

    def state(self) -> list[torch.Tensor]:
        return [self.grad, self.fisher]

    def mean_diagonal(self) -> torch.Tensor:
        return self.fisher.mean()

    def solve(self) -> torch.Tensor:
        damped = self.fisher + self.damping  # (V, d1)
        if not bool((damped > 0).all()):
            raise ValueError(
                "The damped Fisher diagonal has zero entries (damping resolved to "
                f"{self.damping:g}); use a positive damping."
            )
        return self.grad / damped


class ExactHessian(_Curvature):
    """H = (1/N) Σ_i Σ_t c_t [diag(p_t) − p_t p_tᵀ] ⊗ h̃_t h̃_tᵀ + λI (paper eq. 16), explicit: tiny heads only.

    Stored as a block-diagonal part D_v = Σ_t c_t p_tv h̃_t h̃_tᵀ `(V, d1, d1)` minus UᵀU with the rows
    U_t = √c_t · vec(p_t h̃_tᵀ) `(m, V·d1)`, so each block costs two matmuls.
    """

    def __init__(self, vocab: int, d1: int, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__(vocab, d1, dtype, device)
        size = vocab * d1
        self.diag_blocks = torch.zeros(vocab, d1 * d1, dtype=dtype, device=device)  # (V, d1²)
        self.outer = torch.zeros(size, size, dtype=dtype, device=device)  # (P, P)

    def _update_stats(self, probs, feats, weight, counts) -> None:
        m = feats.shape[0]
        feat_outer = (feats[:, :, None] * feats[:, None, :]).reshape(m, -1)  # (m, d1²)
        self.diag_blocks.addmm_((probs * weight[:, None]).T, feat_outer)  # (V, d1²)
        u = (probs * weight.sqrt()[:, None])[:, :, None] * feats[:, None, :]  # (m, V, d1)
        u = u.reshape(m, -1)  # (m, P)
        self.outer.addmm_(u.T, u)  # (P, P)

    def state(self) -> list[torch.Tensor]:
        return [self.grad, self.diag_blocks, self.outer]

    def hessian(self) -> torch.Tensor:
        """The undamped (P, P) matrix, parameters ordered like W̃.flatten() (row v, then input j)."""
        V, d1 = self.vocab, self.d1
        h = -self.outer.clone()
        hv = h.view(V, d1, V, d1)
        idx = torch.arange(V, device=h.device)
        hv[idx, :, idx, :] += self.diag_blocks.view(V, d1, d1)
        return h

    def mean_diagonal(self) -> torch.Tensor:
        return self.hessian().diagonal().mean()

    def solve(self) -> torch.Tensor:
        h = self.hessian()
        h.diagonal().add_(self.damping)
        chol, info = torch.linalg.cholesky_ex(h)
        if int(info) != 0:
            raise ValueError(
                f"The damped exact head Hessian is not positive definite (λ = {self.damping:g}); increase damping."
            )
        a = torch.cholesky_solve(self.grad.reshape(-1, 1), chol)  # (P, 1)
        return a.view(self.vocab, self.d1)


class KFACDiagonal(_Curvature):
    """H ≈ diag(s) ⊗ C + λI with s = (1/N) Σ_t c_t (p_t − p_t²), C = (1/N) Σ_t c_t h̃_t h̃_tᵀ.

    K-FAC's output factor E[diag(p) − ppᵀ] is V×V (2.4·10⁹ entries for V = 49,152), so only its diagonal is kept;
    the input factor is exact. Since Σ_t c_t = N the two factors are properly normalised means. The damped inverse
    uses C = QΛQᵀ: A = ((g_f Q) ⊘ (s ⊗ Λ + λ)) Qᵀ, O(V·d1²).
    """

    def __init__(self, vocab: int, d1: int, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__(vocab, d1, dtype, device)
        self.out_diag = torch.zeros(vocab, dtype=dtype, device=device)  # (V,)
        self.in_cov = torch.zeros(d1, d1, dtype=dtype, device=device)  # (d1, d1)

    def _update_stats(self, probs, feats, weight, counts) -> None:
        self.out_diag += ((probs - probs.square()) * weight[:, None]).sum(0)
        self.in_cov.addmm_((feats * weight[:, None]).T, feats)

    def state(self) -> list[torch.Tensor]:
        return [self.grad, self.out_diag, self.in_cov]

    def mean_diagonal(self) -> torch.Tensor:
        return self.out_diag.mean() * self.in_cov.diagonal().mean()

    def solve(self) -> torch.Tensor:
        eigvals, eigvecs = torch.linalg.eigh(self.in_cov)  # (d1,), (d1, d1)
        denom = self.out_diag[:, None] * eigvals.clamp(min=0)[None, :] + self.damping  # (V, d1)
        if not bool((denom > 0).all()):
            raise ValueError(f"The damped K-FAC curvature is singular (λ = {self.damping:g}); use a positive damping.")
        return ((self.grad @ eigvecs) / denom) @ eigvecs.T


def make_curvature(
    name: str, vocab: int, d1: int, dtype: torch.dtype, device: torch.device, exact_max_params: int
) -> _Curvature:
    if name == "fisher_diag":
        return FisherDiagonal(vocab, d1, dtype, device)
    if name == "kfac":
        return KFACDiagonal(vocab, d1, dtype, device)
    if name == "exact":
        size = vocab * d1
        if size > exact_max_params:
            raise ValueError(
                f"curvature='exact' builds a dense (V·(d+1))² = {size}² head Hessian, above exact_max_params="
                f"{exact_max_params} parameters; use curvature='fisher_diag' (the paper's choice) or 'kfac'."
            )
        return ExactHessian(vocab, d1, dtype, device)
    raise ValueError(f"curvature={name!r} is not supported; choose one of ['fisher_diag', 'exact', 'kfac'].")
