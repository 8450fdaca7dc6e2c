"""oneDNN linear layers for evaluation on a CPU: each weight reordered once, every forward on the blocked copy.

`torch.nn.functional.linear` on a CPU calls MKL's sgemm on the weight as stored. At the small row counts of greedy
decoding (one row per generated answer) and for wide layers (an LM head of ~50k rows) that kernel is far from the
machine's speed: on the 2-core AMD EPYC (AVX-512) machine our benchmarks run on, SmolLM2's LM head (576 -> 49152)
runs at 38 GFLOPS for 20 rows on one thread, the same product through oneDNN on a weight reordered once into its
blocked layout at 78 (the 576 -> 1536 MLP projection: 75 against 106). This is the weight prepacking `torch.compile`
does on CPUs (inductor's `freezing`), without compiling: `prepacked_linears(model)` swaps every plain `nn.Linear`'s
forward for `torch.ops.mkldnn._linear_pointwise` on a reordered copy of its weight, for the duration of an
evaluation (the weights do not change inside it; the copy costs one extra set of linear weights in memory).

Only float rounding changes (another summation order, ~1e-6 relative on SmolLM2's log-probabilities).
`benchmarks/eval_speed_reference.py` checks the outputs against the reference evaluator's item by item.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["onednn_linear_available", "prepacked_linears"]


def onednn_linear_available() -> bool:
    """Whether this torch build has oneDNN's prepacked linear (`mkldnn::_linear_pointwise`)."""
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def _eligible(module: torch.nn.Module) -> bool:
    # Exactly nn.Linear: subclasses (bitsandbytes' quantized layers) have forwards of their own. A PEFT LoRA layer is
    # not one; its base layer and adapter matrices are, and run the packed kernel like any other.
    weight = module.weight if type(module) is torch.nn.Linear else None
    return weight is not None and weight.device.type == "cpu" and weight.dtype == torch.float32


@contextlib.contextmanager
def prepacked_linears(model: torch.nn.Module, enabled: bool = True) -> Iterator[int]:
    """Run the model's float32 CPU `nn.Linear` layers through oneDNN on weights reordered once; yields how many.

    A no-op (yields 0) when disabled, without oneDNN, under CPU autocast, or for layers on another device or dtype.
    The layers' own `forward` is back on exit, also after an error. The weights must not change inside the block.
    """
    usable = enabled and onednn_linear_available() and not torch.is_autocast_enabled("cpu")  # autocast picks its dtype
    layers = [module for module in model.modules() if _eligible(module)] if usable else []
    try:
        for module in layers:
            packed = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), None)
            bias = None if module.bias is None else module.bias.detach()
            module.forward = _packed_forward(packed, bias)  # an instance attribute: shadows the class's forward
        yield len(layers)
    finally:
        for module in layers:
            module.__dict__.pop("forward", None)


def _packed_forward(packed: torch.Tensor, bias: torch.Tensor | None):
    def forward(input: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(input, packed, bias, "none", [], "")

    return forward
