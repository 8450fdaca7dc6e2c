"""RMU: steer the forget set's activations at one layer to a random direction, keep the retain set's in place."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..data.pairing import pad_examples
from ..utils import IGNORE_INDEX
from .base_trainer import UnlearnTrainer
from .token_terms import token_mean

__all__ = ["RMUTrainer", "decoder_layer", "rmu_loss"]

_BLOCK = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)$")


def rmu_loss(
    hidden: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """(1/N)·Σ_{t∈A} (1/d)‖h_t − target_t‖², RMU's activation distance (Li et al., "The WMDP Benchmark: Measuring
    and Reducing Malicious Use With Unlearning", ICML 2024): target = c·u on the forget set, h^ref on the retain set.

    Args:
        hidden: `(B, T, d)` activations h_t; target: `(d,)` or `(B, T, d)`.
        mask: `(B, T)` the positions A that count.
        weights: `(B,)` influence weights ŵ_i, or None.
        num_items_in_batch: N, the step's labelled tokens (Σ ŵ with weights); None: this batch's own.
    """
    distance = (hidden.float() - target.float()).pow(2).mean(-1)  # (B, T)
    return token_mean(distance, mask, weights, num_items_in_batch)


def decoder_layer(model: torch.nn.Module, index: int) -> torch.nn.Module:
    """The decoder block `index` (a module named `...layers.N`, `...h.N` or `...blocks.N`)."""
    blocks = {}
    for name, module in model.named_modules():
        match = _BLOCK.search(name)
        if match:
            blocks.setdefault(int(match.group(1)), module)
    if index not in blocks:
        raise ValueError(f"layer={index}: the model has decoder layers 0..{max(blocks, default=-1)} (`layers.N`).")
    return blocks[index]


@contextmanager
def _captured(module: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """The output activations of `module` during the forward passes inside the block, under `"h"`."""
    store: dict[str, torch.Tensor] = {}

    def hook(_module, _args, output):
        store["h"] = output[0] if isinstance(output, tuple) else output

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


class RMUTrainer(UnlearnTrainer):
    """RMU (Li et al., "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning", ICML 2024).

    The activations h_t are the output of decoder layer `layer` at the answer tokens' own positions (after the
    causal shift, so the counts are the step's labelled tokens; padding never counts, while the original code
    averages over every position). u ~ U[0, 1)^d, scaled to norm 1, is drawn once from `seed`. The retain term needs
    the frozen initial model's activations on every retain batch (a frozen copy, `ref_model`, or the PEFT model with
    its adapter disabled). Which parameters train is the config's `trainable` (the WMDP preset: `mlp.down_proj` of
    layers 5–7). Logs `forget_nll`, `rmu/forget_distance` and `rmu/retain_distance`.

    Example:
    ```python
    >>> from hf_unlearn import RMUConfig, RMUTrainer
    >>> args = RMUConfig.preset("wmdp_zephyr", output_dir="rmu")
    >>> RMUTrainer(model, args, forget_dataset=forget, retain_dataset=retain).train()
    ```
    """

    control_vector: torch.Tensor | None = None

    @property
    def needs_reference_model(self) -> bool:
        return self.args.retain_loss != "none"

    def steering_target(self, size: int, device: torch.device) -> torch.Tensor:
        """c·u, u ~ U[0, 1)^d drawn once from the config's seed and scaled to norm 1, `(d,)`."""
        if self.control_vector is None or self.control_vector.shape[0] != size:
            u = torch.rand(size, generator=torch.Generator().manual_seed(self.args.seed), dtype=torch.float64)
            self.control_vector = (self.args.steering_coefficient * u / u.norm()).float()
        return self.control_vector.to(device)

    def prepare_training(self, resume_from_checkpoint):
        super().prepare_training(resume_from_checkpoint)
        self.freeze_after_layer()

    def freeze_after_layer(self) -> None:
        """Stop training the parameters that `layer`'s output does not depend on (later layers, the final norm, an
        untied head): they get no gradient from RMU's loss anyway, and under DDP a parameter that the forward uses but
        the loss does not would keep its gradient bucket from being averaged across processes. Found by one forward
        and backward of the first forget row, so any architecture works."""
        model = self.accelerator.unwrap_model(self.model)
        trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
        row = {key: value.to(self.args.device) for key, value in pad_examples([self.forget_dataset[0]], 0).items()}
        with _captured(decoder_layer(model, self.args.layer)) as store:
            model(input_ids=row["input_ids"], attention_mask=row["attention_mask"])
        gradients = torch.autograd.grad(store["h"].float().sum(), trainable, allow_unused=True)
        unused = [parameter for parameter, gradient in zip(trainable, gradients) if gradient is None]
        for parameter in unused:
            parameter.requires_grad_(False)
        if unused:
            named = model.named_parameters(remove_duplicate=False)
            self.trainable_names = sorted(name for name, parameter in named if parameter.requires_grad)

    def _layer(self, model: torch.nn.Module) -> torch.nn.Module:
        return decoder_layer(self.accelerator.unwrap_model(model), self.args.layer)

    def forget_loss(self, model, inputs):
        with _captured(self._layer(model)) as store:
            batch = self.forget_forward(model, inputs)
        hidden = store["h"][:, 1:]  # (B, T-1, d) at the answer tokens' positions
        mask = inputs["forget"]["labels"][:, 1:].ne(IGNORE_INDEX)  # (B, T-1)
        loss = rmu_loss(hidden, self.steering_target(hidden.shape[-1], hidden.device), mask, batch.weights,
                        batch.num_items("token"))  # fmt: skip
        self.record("rmu/forget_distance", rmu_loss(hidden.detach(), self.control_vector.to(hidden.device), mask))
        return self.args.forget_loss_weight * loss

    def retain_loss(self, model, inputs):
        if self.args.retain_loss == "none" or "retain" not in inputs:
            return torch.zeros((), device=self.args.device)
        retain = inputs["retain"]
        with _captured(self._layer(model)) as store:
            model(input_ids=retain["input_ids"], attention_mask=retain["attention_mask"])
        reference = self.ref_model if self.ref_model is not None else model  # PEFT: the adapter disabled
        with _captured(self._layer(reference)) as ref_store:
            self.reference_logits(model, retain)
        mask = retain["labels"][:, 1:].ne(IGNORE_INDEX)  # (B, T-1)
        hidden, ref_hidden = store["h"][:, 1:], ref_store["h"][:, 1:]
        num_items = None if self.step_counts is None else self.step_counts.retain("token")
        self.record("rmu/retain_distance", rmu_loss(hidden.detach(), ref_hidden, mask))
        return self.args.retain_loss_weight * rmu_loss(hidden, ref_hidden, mask, None, num_items)
