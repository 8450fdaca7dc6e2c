"""IAU: one gradient step that descends on the retain set and ascends on the forget set, each summed in full."""

from __future__ import annotations

import numpy as np
import torch

from ..data.pairing import ForgetThenRetainDataset, UnlearnCollator
from .base_trainer import UnlearnTrainer
from .step import normalized_sum

__all__ = ["IAUTrainer", "iau_loss"]


def iau_loss(
    forget_nll: torch.Tensor,
    retain_nll: torch.Tensor,
    num_forget: float | torch.Tensor,
    num_retain: float | torch.Tensor,
    normalization: str,
) -> torch.Tensor:
    """The micro-batch's share of Σ_{i∈Dr} ℓ_i − Σ_{j∈Df} ℓ_j (IAU eq. 8), whose gradient summed over one pass is the
    update direction; with `normalization="mean"` each sum is divided by its set's size in the pass (`num_forget`,
    `num_retain`).

    Args:
        forget_nll, retain_nll: `(B_f,)`, `(B_r,)` length-normalised answer NLL ℓ of the micro-batch's forget and
            retain examples (either may be empty).
    """
    forget_scale, retain_scale = (num_forget, num_retain) if normalization == "mean" else (1.0, 1.0)
    return normalized_sum(retain_nll, None, retain_scale) - normalized_sum(forget_nll, None, forget_scale)


class IAUTrainer(UnlearnTrainer):
    """IAU (Liu, Wu, Lian, Chen, "Efficient Machine Unlearning via Influence Approximation", §V, eq. 8):
    θ ← θ − η(Σ_{Dr} ∇ℓ − Σ_{Df} ∇ℓ), the paper's single step by default (`max_steps=1`).

    One optimizer step accumulates the gradient of every forget and every retain example once (`prepare_datasets`:
    the micro-batches run through Df, then Dr; `steps_per_update`: one pass), so `max_steps` counts full IAU updates.
    The paper's other half, the gradient-restricted training of the original model (eq. 7), is
    `hf_unlearn.trainers.gradient_restriction` (an option of the Markov task's original model and of
    `hf-unlearn finetune`). Under several processes accelerate may repeat a few examples to even out the last batch.
    Logs `forget_nll` and `retain_nll` (micro-batch means) and, as `loss`, Σ_Dr ℓ − Σ_Df ℓ (or the difference of
    means) at the step's θ.

    Example:
    ```python
    >>> from hf_unlearn import IAUConfig, IAUTrainer
    >>> args = IAUConfig(output_dir="iau", learning_rate=1e-3, normalization="mean")
    >>> IAUTrainer(model, args, forget_dataset=forget, retain_dataset=retain).train()
    ```
    """

    def prepare_datasets(self, forget_dataset, retain_dataset, args):
        if retain_dataset is None:
            raise ValueError(
                "IAU needs a retain_dataset: its update descends on the retain gradient sum Σ_{Dr} ∇ℓ as it ascends "
                "on the forget set's (IAU eq. 8). Pass retain_dataset=..., or use GA for a retain-free ascent."
            )
        if args.max_retain_examples is not None and args.max_retain_examples < len(retain_dataset):
            rows = np.random.default_rng(args.seed).choice(len(retain_dataset), args.max_retain_examples, replace=False)
            retain_dataset = retain_dataset.select(sorted(rows.tolist()))
        return ForgetThenRetainDataset(forget_dataset, retain_dataset), UnlearnCollator(self.pad_token_id)

    def steps_per_update(self):
        return len(self.get_train_dataloader())

    def _pass_share(self, mean_nll: torch.Tensor, half: str) -> torch.Tensor:
        """This micro-batch's share of the `half` ("forget" or "retain") sum of eq. 8, normalised by that set's size
        in the pass (outside a training step: in the micro-batch)."""
        size = len(mean_nll) if self.step_counts is None else getattr(self.step_counts, f"{half}_sequences")
        empty = mean_nll.new_zeros(0)
        if half == "forget":
            return iau_loss(mean_nll, empty, size, 1.0, self.args.normalization)
        return iau_loss(empty, mean_nll, 1.0, size, self.args.normalization)

    def forget_loss(self, model, inputs):
        return self._pass_share(self.forget_forward(model, inputs).mean_nll, "forget")

    def retain_loss(self, model, inputs):
        if "retain" not in inputs:
            return torch.zeros((), device=self.args.device)
        _, nll, num_tokens = self.retain_forward(model, inputs)  # (B,), (B,)
        self.record("retain_nll", (nll / num_tokens).detach().mean())
        return self._pass_share(nll / num_tokens, "retain")
