"""Gradient restriction (GR): the training loss ℓ + α‖∇_θ ℓ‖₂ of IAU's training phase, as a loss helper and a
`Trainer` mixin (`docs/methods.md#gradient-restriction`).

IAU's update is a first-order step on the original model; a model trained to have small per-batch gradients suffers
less from a forget example with an outlying gradient (Liu et al., "Efficient Machine Unlearning via Influence
Approximation", §V-C, eq. 7). The penalty needs ∇_θ ℓ inside the graph, so every step runs a second, differentiable
backward pass: measured on the Markov task, one GR step costs about three plain steps (`docs/methods.md`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from transformers import Trainer

from .gradient_restriction_config import GRADIENT_NORMS, GradientRestriction

__all__ = [
    "GRADIENT_NORMS",
    "GradientRestriction",
    "GradientRestrictionMixin",
    "GradientRestrictionTrainer",
    "causal_lm_loss",
    "double_backward_attention",
    "gradient_norm",
    "gradient_restricted_loss",
]


@contextlib.contextmanager
def double_backward_attention() -> Iterator[None]:
    """Forward passes inside take PyTorch's plain ("math") attention, whose backward is itself differentiable; the
    fused kernels (flash, memory-efficient) have no double backward. Eager attention is unaffected."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def causal_lm_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None, **kwargs: Any) -> torch.Tensor:
    """The standard causal-LM NLL from full logits (transformers' `ForCausalLMLoss`), as a Trainer
    `compute_loss_func`. Trainers whose own loss runs a fused kernel without a double backward (TRL's SFT loss through
    its fused LM head) take this one under gradient restriction: the same NLL, through ordinary autograd ops."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
    return ForCausalLMLoss(logits, labels, logits.shape[-1], num_items_in_batch=num_items_in_batch)


def gradient_norm(loss: torch.Tensor, parameters: Iterable[torch.Tensor], norm: str = "l2") -> torch.Tensor:
    """‖∇_θ loss‖ over `parameters`, differentiable in θ (the gradient is taken with `create_graph=True`)."""
    parameters = list(parameters)
    grads = torch.autograd.grad(loss, parameters, create_graph=True, allow_unused=True)
    # Half-precision gradients are summed in fp32; fp32 / fp64 ones as they are.
    norms = [
        torch.linalg.vector_norm(g.to(torch.promote_types(g.dtype, torch.float32))) for g in grads if g is not None
    ]
    norms = torch.stack(norms)  # (P,)
    return torch.linalg.vector_norm(norms) if norm == "l2" else norms.sum()


def gradient_restricted_loss(
    loss: torch.Tensor, parameters: Iterable[torch.Tensor], weight: float, norm: str = "l2"
) -> tuple[torch.Tensor, torch.Tensor]:
    """ℓ_GR = ℓ + α‖∇_θ ℓ‖ (IAU eq. 7) for a scalar loss `loss` of the current batch; returns `(ℓ_GR, ‖∇_θ ℓ‖)`.

    The paper writes the norm per training point z; like the authors' code we take it of the batch loss (a per-example
    norm would cost one double backward per example).
    """
    grad_norm = gradient_norm(loss, parameters, norm)
    return loss + weight * grad_norm, grad_norm


class GradientRestrictionMixin:
    """Adds α‖∇_θ ℓ‖ to whatever loss the trainer it is mixed into computes (`Trainer`, TRL's `SFTTrainer`, ...).

    `class GRSFTTrainer(GradientRestrictionMixin, SFTTrainer)`, then `GRSFTTrainer(..., gradient_restriction=
    GradientRestriction(weight=0.005))`. Logs `gradient_restriction_norm` (mean ‖∇_θ ℓ‖ since the last log).
    """

    def __init__(self, *args: Any, gradient_restriction: GradientRestriction, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.gradient_restriction = gradient_restriction
        self._restriction_norms: list[float] = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        with double_backward_attention():
            loss, outputs = super().compute_loss(
                model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
            parameters = [p for p in model.parameters() if p.requires_grad]
            loss, grad_norm = gradient_restricted_loss(
                loss, parameters, self.gradient_restriction.weight, self.gradient_restriction.norm
            )
        self._restriction_norms.append(float(grad_norm.detach()))
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self._restriction_norms:
            logs = {**logs, "gradient_restriction_norm": sum(self._restriction_norms) / len(self._restriction_norms)}
            self._restriction_norms.clear()
        super().log(logs, *args, **kwargs)


class GradientRestrictionTrainer(GradientRestrictionMixin, Trainer):
    """A `transformers.Trainer` whose loss is ℓ + α‖∇_θ ℓ‖ (IAU's training phase)."""
