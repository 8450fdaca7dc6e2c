"""IAU: one gradient step that descends on the retain set and ascends on the forget set, each summed in full."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.pairing import pad_examples, validate_lm_dataset
from ..utils import sequence_nll
from .base_trainer import UnlearnTrainer

__all__ = ["IAUTrainer", "iau_loss"]


def iau_loss(
    example_nll: torch.Tensor, is_forget: torch.Tensor, num_retain: int, num_forget: int, normalization: str
) -> torch.Tensor:
    """The micro-batch's share of Σ_{i∈Dr} ℓ_i − Σ_{j∈Df} ℓ_j (IAU eq. 8), whose gradient summed over one pass is the
    update direction; with `normalization="mean"` each sum is divided by its set's size (`num_retain`, `num_forget`).

    Args:
        example_nll: `(B,)` length-normalised answer NLL ℓ of each example of the micro-batch.
        is_forget: `(B,)` bool, True for forget examples.
    """
    if normalization == "mean":
        retain_scale, forget_scale = 1.0 / num_retain, 1.0 / num_forget
    else:
        retain_scale = forget_scale = 1.0
    retain_weight = torch.full_like(example_nll, retain_scale)  # in the loss's dtype: 1/|D| not rounded to fp32
    weights = torch.where(is_forget, -forget_scale * torch.ones_like(example_nll), retain_weight)  # (B,)
    return (weights * example_nll).sum()


class _FullPassDataset(Dataset):
    """Every forget example, then every retain example, each once: the summands of eq. 8."""

    def __init__(self, forget: Any, retain: Any):
        self.forget, self.retain = forget, retain

    def __len__(self) -> int:
        return len(self.forget) + len(self.retain)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < len(self.forget):
            return {"example": self.forget[index], "is_forget": True}
        return {"example": self.retain[index - len(self.forget)], "is_forget": False}


class _FullPassCollator:
    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad_examples([item["example"] for item in items], self.pad_token_id)
        batch["is_forget"] = torch.tensor([item["is_forget"] for item in items], dtype=torch.bool)
        return batch


class IAUTrainer(UnlearnTrainer):
    """IAU (Liu, Wu, Lian, Chen, "Efficient Machine Unlearning via Influence Approximation", §V, eq. 8):
    θ ← θ − η(Σ_{Dr} ∇ℓ − Σ_{Df} ∇ℓ), the paper's single step by default (`max_steps=1`).

    One optimizer step accumulates the gradient of every forget and every retain example once (the micro-batches mix
    both sets; `gradient_accumulation_steps` is set to the pass's length when training starts), so `max_steps` counts
    full IAU updates. The paper's other half, the gradient-restricted training of the original model (eq. 7), is
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

    # The loss is already the micro-batch's share of a sum over the whole pass: Trainer must not divide it.
    loss_is_scaled_for_ga = True

    def __init__(self, model: Any, args: Any, forget_dataset: Any, retain_dataset: Any | None = None, **kwargs: Any):
        if retain_dataset is None:
            raise ValueError(
                "IAU needs a retain_dataset: its update descends on the retain gradient sum Σ_{Dr} ∇ℓ as it ascends "
                "on the forget set's (IAU eq. 8). Pass retain_dataset=..., or use GA for a retain-free ascent."
            )
        validate_lm_dataset(retain_dataset, "retain")
        if args.max_retain_examples is not None and args.max_retain_examples < len(retain_dataset):
            rows = np.random.default_rng(args.seed).choice(len(retain_dataset), args.max_retain_examples, replace=False)
            retain_dataset = retain_dataset.select(sorted(rows.tolist()))
        super().__init__(model, args, forget_dataset, retain_dataset=retain_dataset, **kwargs)
        self.retain_dataset = retain_dataset
        self.train_dataset = _FullPassDataset(forget_dataset, retain_dataset)
        self.data_collator = _FullPassCollator(self.pad_token_id)

    def train(self, *args: Any, **kwargs: Any):
        """One optimizer step per pass over Df ∪ Dr: the accumulation steps are that pass's micro-batches."""
        self.args.gradient_accumulation_steps = len(self.get_train_dataloader())
        return super().train(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        nll, num_tokens = sequence_nll(outputs.logits, inputs["labels"])  # (B,), (B,)
        example_nll = nll / num_tokens  # (B,)
        is_forget = inputs["is_forget"]
        loss = iau_loss(
            example_nll, is_forget, len(self.retain_dataset), len(self.forget_dataset), self.args.normalization
        )
        # Several processes: DDP averages the gradients, the update needs their sum.
        loss = self.check_finite(loss * self.accelerator.num_processes)
        for name, rows in (("forget_nll", is_forget), ("retain_nll", ~is_forget)):
            if rows.any():
                self.record(name, example_nll[rows].mean())
        return (loss, outputs) if return_outputs else loss
