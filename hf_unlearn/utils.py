"""Small tensor and process helpers of the library core (trainers, influence engine, evaluation runner)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

__all__ = [
    "IGNORE_INDEX",
    "all_gather_objects",
    "has_accelerator",
    "rank_and_world",
    "sequence_nll",
    "sha256_json",
    "token_logprobs",
    "weights_sha256",
]


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of every labelled next token, with the HF causal-LM shift.

    Args:
        logits: `(B, T, V)` model outputs.
        labels: `(B, T)` targets, `-100` where ignored (prompt, template, padding).

    Returns:
        `(logps, mask)`, both `(B, T-1)`: `logps[b, t] = log p(labels[b, t+1] | x_{<=t})`, zero where `mask` is False.
    """
    shift_logits = logits[:, :-1, :]  # (B, T-1, V)
    shift_labels = labels[:, 1:]  # (B, T-1)
    mask = shift_labels.ne(IGNORE_INDEX)
    # cross_entropy never materialises a (B, T, V) log-softmax copy beyond what it needs.
    nll = F.cross_entropy(shift_logits.transpose(1, 2).float(), shift_labels.masked_fill(~mask, 0), reduction="none")
    return (-nll).masked_fill(~mask, 0.0), mask  # (B, T-1)


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed NLL of each sequence's labelled tokens and their count, both `(B,)`."""
    logps, mask = token_logprobs(logits, labels)
    return -logps.sum(dim=-1), mask.sum(dim=-1)


def rank_and_world() -> tuple[int, int]:
    """`(rank, world_size)` of the initialised `torch.distributed` group (however it was started), else `(0, 1)`."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order (`[value]` without a process group)."""
    world = rank_and_world()[1]
    if world == 1:
        return [value]
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def has_accelerator() -> bool:
    """Is a GPU (or another torch accelerator) present? Decides defaults such as pinned dataloader memory."""
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    return accelerator.is_available() if accelerator else torch.cuda.is_available()


def sha256_json(payload: Any) -> str:
    """sha256 of a canonical JSON dump (sorted keys): the identity of settings and values."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def weights_sha256(model: torch.nn.Module, header: bytes = b"") -> str:
    """sha256 of `header` then every tensor of the model's state dict (name, dtype, shape, bytes): the weights'
    identity, whatever folder they were loaded from."""
    digest = hashlib.sha256(header)
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        # Viewed as bytes (numpy has no bfloat16) and hashed in place, without a copy.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data if tensor.numel() else b"")
    return digest.hexdigest()
