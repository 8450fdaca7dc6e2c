"""Quantization attack: load the unlearned model at 8 or 4 bits and score it.

Unlearning with a small learning rate moves most weights by less than half a quantization step, so rounding can map
the unlearned weights back onto the original's codes (docs/attacks.md). Backends:

- `bitsandbytes` (default, the setting of the quantization study): `BitsAndBytesConfig(load_in_8bit=True)` (LLM.int8)
  or `load_in_4bit=True` (`quant_type` "fp4", its default, or "nf4"), on the CPU or a GPU;
- `torchao`: weight-only round-to-nearest (`Int8WeightOnlyConfig`, or int4 in groups of `group_size`);
- `rtn`: the same round-to-nearest in plain torch (symmetric absmax per group of `group_size` input weights),
  fake-quantized in place; the one that also handles GPT-2's `Conv1D` layers besides bitsandbytes;
- `gptq`: GPTQ through transformers' `GPTQConfig` (optimum and gptqmodel installed), calibrated on token ids the caller
  passes (`calibration`: text that excludes the forget set); slow on a CPU, meant for GPU users.

A quantizer that loads without error can still quantize nothing (torchao leaves GPT-2's `Conv1D` alone): every run
counts the layers it really quantized and checks that the logits changed, and says so in its record.

Two traps with bitsandbytes: it tries to download a kernel from the Hub unless `HF_HUB_OFFLINE=1` (set around the
load here when unset), and a 4-bit model saved after a forward pass on a CPU with AVX512-BF16 is corrupted (the
kernel repacks its weights). The models quantized here are never saved: they are scored in memory and dropped.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Any

import torch

from .record import QUANT_BACKENDS, AttackRecord

__all__ = [
    "QUANT_BACKENDS",
    "dequantized_weights",
    "quantize",
    "quantized_code_change",
    "quantized_value_change",
    "rtn_codes",
    "rtn_fake_quant",
]


def rtn_codes(weight: torch.Tensor, bits: int, group_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax round-to-nearest of a `(out, in)` weight in groups of `group_size` consecutive input weights:
    integer codes in [−q, q], q = 2^(bits−1) − 1, shaped like `weight`, and the scales `(out, ceil(in / group_size))`.

    The last group of a row may be shorter; an all-zero group gets scale 1 (codes 0)."""
    if bits < 2:
        raise ValueError(f"bits must be >= 2, got {bits}.")
    rows, columns = weight.shape
    qmax = 2 ** (bits - 1) - 1
    groups = -(-columns // group_size)
    padded = torch.nn.functional.pad(weight.detach().float(), (0, groups * group_size - columns))
    grouped = padded.reshape(rows, groups, group_size)  # (out, G, g)
    scales = grouped.abs().amax(dim=-1) / qmax  # (out, G)
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    codes = torch.round(grouped / scales.unsqueeze(-1)).clamp(-qmax, qmax)
    return codes.reshape(rows, groups * group_size)[:, :columns], scales


def rtn_fake_quant(weight: torch.Tensor, bits: int, group_size: int = 64) -> torch.Tensor:
    """`weight` rounded onto its `rtn_codes` grid and back (same shape and dtype)."""
    codes, scales = rtn_codes(weight, bits, group_size)
    scale = scales.repeat_interleave(group_size, dim=1)[:, : weight.shape[1]]
    return (codes * scale).to(weight.dtype)


def _quantizable(model: torch.nn.Module) -> dict[str, tuple[torch.nn.Module, bool]]:
    """The layers a weight-only quantizer targets: every `nn.Linear` and GPT-2 `Conv1D` but the output head, as
    name -> (module, transposed) (Conv1D keeps its weight as `(in, out)`)."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    layers = {}
    for name, module in model.named_modules():
        if module is head:
            continue
        if isinstance(module, Conv1D):
            layers[name] = (module, True)
        elif isinstance(module, torch.nn.Linear):
            layers[name] = (module, False)
    return layers


def quantized_code_change(
    original: torch.nn.Module, unlearned: torch.nn.Module, bits: int = 4, group_size: int = 64
) -> dict[str, Any]:
    """How many weights differ between the two models at full precision and after `rtn_codes` quantization.

    Returns `weights` (count over the quantizable layers), `changed` (share that differ at full precision) and
    `changed_quantized` (share whose quantized value differs: each model rounded on its own grid, then compared).
    Unlearning whose updates are smaller than half a step shows `changed` near 1 and `changed_quantized` near 0."""
    original_layers, unlearned_layers = _quantizable(original), _quantizable(unlearned)
    if set(original_layers) != set(unlearned_layers):
        raise ValueError("the two models do not have the same quantizable layers.")
    total = changed = changed_quantized = 0
    for name, (module, transposed) in original_layers.items():
        a, b = module.weight.detach(), unlearned_layers[name][0].weight.detach()
        if transposed:
            a, b = a.t(), b.t()
        total += a.numel()
        changed += int((a != b).sum())
        changed_quantized += int((rtn_fake_quant(a, bits, group_size) != rtn_fake_quant(b, bits, group_size)).sum())
    return {
        "bits": bits,
        "group_size": group_size,
        "weights": total,
        "changed": changed / total if total else None,
        "changed_quantized": changed_quantized / total if total else None,
    }


def dequantized_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weight of every quantizable layer as the model computes with it, `(out, in)` in float32: bitsandbytes
    weights dequantized (call it before the first forward pass of a 4-bit model on a CPU, whose kernel repacks the
    weights), torchao's and gptqmodel's by their own dequantization, plain layers as they are (GPT-2's `Conv1D` transposed)."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weights = {}
    for name, module in model.named_modules():
        if hasattr(module, "qweight") and hasattr(module, "dequantize_weight"):  # gptqmodel keeps `(in, out)`
            weights[name] = module.dequantize_weight().detach().t().float()
            continue
        weight = getattr(module, "weight", None)
        kind = type(weight).__name__
        if module is head or not isinstance(weight, torch.Tensor) or (weight.dim() != 2 and "Params" not in kind):
            continue
        if kind in ("Params4bit", "Int8Params"):
            from transformers.integrations.bitsandbytes import dequantize_bnb_weight

            weights[name] = dequantize_bnb_weight(weight, getattr(module, "state", None)).detach().float()
        elif type(weight.data).__module__.startswith("torchao") or type(weight).__module__.startswith("torchao"):
            weights[name] = weight.dequantize().detach().float()
        elif isinstance(module, Conv1D):
            weights[name] = weight.detach().t().float()
        elif isinstance(module, torch.nn.Linear):
            weights[name] = weight.detach().float()
    return weights


def quantized_value_change(original: dict[str, torch.Tensor], unlearned: dict[str, torch.Tensor]) -> dict:
    """Share of the weights whose quantized value differs between two models quantized alike, from the
    `dequantized_weights` of each (`quantize(..., weights_out=...)`)."""
    a, b = original, unlearned
    if set(a) != set(b):
        raise ValueError("the two models do not have the same quantized layers.")
    total = sum(weight.numel() for weight in a.values())
    changed = sum(int((a[name] != b[name]).sum()) for name in a)
    return {"weights": total, "changed_quantized": changed / total if total else None}


@contextmanager
def quiet_bitsandbytes():
    """bitsandbytes' 8-bit matmul logs a warning at every call on float32 inputs; kept to errors while inside."""
    import logging

    logger = logging.getLogger("bitsandbytes")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def _hub_offline():
    """bitsandbytes looks for a kernel on the Hub when it loads; offline unless the caller decided otherwise."""
    unset = "HF_HUB_OFFLINE" not in os.environ
    if unset:
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if unset:
            os.environ.pop("HF_HUB_OFFLINE", None)


def _count_quantized(model: torch.nn.Module, backend: str) -> int:
    if backend == "bitsandbytes":
        return sum(type(module).__module__.startswith("bitsandbytes") for module in model.modules())
    if backend == "gptq":  # gptqmodel swaps each layer for one of its quantized linear classes
        return sum(type(module).__module__.startswith("gptqmodel") for module in model.modules())
    if backend == "torchao":  # torchao swaps the weight for one of its tensor subclasses
        return sum(
            type(getattr(module, "weight", None)).__module__.startswith("torchao")
            or type(getattr(getattr(module, "weight", None), "data", None)).__module__.startswith("torchao")
            for module in model.modules()
        )
    raise ValueError(backend)


def quantize(
    model: torch.nn.Module,
    bits: int = 4,
    backend: str = "bitsandbytes",
    quant_type: str = "fp4",
    group_size: int = 64,
    probe_input_ids: torch.Tensor | None = None,
    weights_out: dict[str, torch.Tensor] | None = None,
    calibration: list[list[int]] | None = None,
):
    """`model` quantized to `bits` (8 or 4) with `backend` (`QUANT_BACKENDS`); `model` itself is left as it was.

    `probe_input_ids` `(B, T)`: a batch on which the logits of both models are compared (default: a few token ids).
    Returns `(quantized_model, record)`; `record.details` has `quantized_layers`, `candidate_layers`,
    `logits_max_abs_diff`, `logits_changed` and `effective` (some layer quantized and the logits moved).
    `weights_out`: a dict filled with `dequantized_weights` of the quantized model, read before its first forward
    pass. `calibration`: the token-id sequences GPTQ calibrates on (required by `gptq`, unused by the others)."""
    if bits not in (4, 8):
        raise ValueError(f"bits must be 8 or 4, got {bits}.")
    if backend not in QUANT_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(QUANT_BACKENDS)}, got {backend!r}.")
    if backend == "gptq" and not calibration:
        raise ValueError("quantize(gptq) needs calibration token ids (text that excludes the forget set).")
    device = next(model.parameters()).device
    candidates = _quantizable(model)
    if backend == "rtn":
        import copy

        quantized = copy.deepcopy(model)
        layers = _quantizable(quantized)
        for module, transposed in layers.values():
            weight = module.weight.data
            module.weight.data = (
                rtn_fake_quant(weight.t(), bits, group_size).t()
                if transposed
                else rtn_fake_quant(weight, bits, group_size)
            )
        count = len(layers)
    else:
        with tempfile.TemporaryDirectory(prefix="hf_unlearn_quantize_") as folder, _hub_offline():
            model.save_pretrained(folder, safe_serialization=True)
            config = _quantization_config(backend, bits, quant_type, group_size, calibration)
            quantized = type(model).from_pretrained(
                folder, quantization_config=config, device_map=str(device), dtype=next(model.parameters()).dtype
            )
        count = _count_quantized(quantized, backend)
    quantized.eval()
    if weights_out is not None:
        weights_out.update(dequantized_weights(quantized))
    if probe_input_ids is None:
        vocab = model.config.vocab_size
        probe_input_ids = torch.arange(16).remainder(vocab).reshape(2, 8)
    was_training = model.training
    model.eval()  # no dropout in the comparison
    with torch.no_grad(), quiet_bitsandbytes():
        before = model(input_ids=probe_input_ids.to(device)).logits.float()
        after = quantized(input_ids=probe_input_ids.to(device)).logits.float()
    model.train(was_training)
    difference = (after - before).abs().max().item()
    if count == 0 or difference == 0:
        import warnings

        warnings.warn(
            f"quantize({backend}, {bits} bits) quantized {count} of {len(candidates)} layers and moved the logits by "
            f"{difference:g}: the attack did nothing to this model.",
            stacklevel=2,
        )
    record = AttackRecord(
        f"quant{bits}",
        settings={
            "bits": bits,
            "backend": backend,
            "quant_type": quant_type if backend == "bitsandbytes" and bits == 4 else None,
            "group_size": group_size if backend != "bitsandbytes" else None,
            "calibration_rows": len(calibration) if backend == "gptq" else None,
        },
        details={
            "quantized_layers": count,
            "candidate_layers": len(candidates),
            "logits_max_abs_diff": difference,
            "logits_changed": difference > 0,
            "effective": count > 0 and difference > 0,
        },
    )
    return quantized, record


def _quantization_config(backend: str, bits: int, quant_type: str, group_size: int, calibration=None):
    if backend == "gptq":
        from transformers import GPTQConfig

        rows = [
            {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
            for ids in calibration
        ]
        return GPTQConfig(bits=bits, group_size=group_size, dataset=rows)
    if backend == "bitsandbytes":
        from transformers import BitsAndBytesConfig

        if bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type)
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, PerGroup
    from transformers import TorchAoConfig

    if bits == 8:
        return TorchAoConfig(Int8WeightOnlyConfig())
    return TorchAoConfig(IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size)))
