"""Everything model-specific about LM-head influence, in one small task object (kronfluence's `Task` split).

The engine (`engine.py`) never looks at batch structure: it asks the task how to batch rows, how to run the model,
which module is the head, and which head inputs h_t are scored against which targets y_t with which weight c_t
(c_t = 1/|y_i| makes ℓ_i the mean NLL of `docs/influence.md`). Subclass `CausalLMHeadTask` for other conventions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..utils import IGNORE_INDEX

__all__ = ["CausalLMHeadTask", "HeadTokens", "is_sharded", "resolve_head_parameters"]


@dataclass
class HeadTokens:
    """The scored tokens of a batch, grouped by sample in batch order.

    Attributes:
        hidden: `(M, d)` head inputs h_t.
        targets: `(M,)` target ids y_t.
        sample: `(M,)` row of the batch each token belongs to (non-decreasing).
        weight: `(M,)` c_t, so that G_i = Σ_t c_t (p_t − e_{y_t}) h̃_tᵀ.
        logits: `(M, V)` the head's own outputs at those positions, when the engine can reuse them, else None.
    """

    hidden: torch.Tensor
    targets: torch.Tensor
    sample: torch.Tensor
    weight: torch.Tensor
    logits: torch.Tensor | None = None


class CausalLMHeadTask:
    """HF causal-LM convention: ℓ_i = mean NLL over labelled tokens, labels shifted inside, −100 ignored.

    Rows are mappings with `input_ids` and `labels` (same length) and optionally `attention_mask`; they are right-
    padded per batch with the model's pad id (or 0: padded positions are masked and unlabelled anyway).
    """

    def get_head(self, model: nn.Module) -> nn.Module:
        """The module whose weight is W (and bias b): the output embeddings, whatever wraps them (PEFT, tying)."""
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if head is None:
            raise ValueError(
                f"{type(model).__name__}.get_output_embeddings() returned no module: LM-head influence needs a model "
                "with an output embedding (a *ForCausalLM model), or a task subclass that overrides get_head()."
            )
        return head

    def row(self, sample: Mapping[str, Any], index: int) -> dict[str, torch.Tensor]:
        """One dataset row as 1-D long tensors, validated."""
        if "input_ids" not in sample or "labels" not in sample:
            raise ValueError(f"Sample {index} needs 'input_ids' and 'labels'; it has {sorted(sample)}.")
        out = {"input_ids": torch.as_tensor(sample["input_ids"], dtype=torch.long).reshape(-1)}
        out["labels"] = torch.as_tensor(sample["labels"], dtype=torch.long).reshape(-1)
        if sample.get("attention_mask") is not None:
            out["attention_mask"] = torch.as_tensor(sample["attention_mask"], dtype=torch.long).reshape(-1)
        lengths = {k: v.numel() for k, v in out.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"Sample {index} has fields of different lengths: {lengths}.")
        return out

    def num_scored_tokens(self, row: Mapping[str, torch.Tensor]) -> int:
        """|y_i|: labelled tokens after the causal shift (the first position is never a target)."""
        return int(row["labels"][1:].ne(IGNORE_INDEX).sum())

    def length(self, row: Mapping[str, torch.Tensor]) -> int:
        return int(row["input_ids"].numel())

    def collate(self, rows: Sequence[Mapping[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
        """Right padding with an attention mask; padded labels are −100."""
        width = max(r["input_ids"].numel() for r in rows)
        input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)  # (B, T)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
        for b, r in enumerate(rows):
            n = r["input_ids"].numel()
            input_ids[b, :n] = r["input_ids"]
            labels[b, :n] = r["labels"]
            attention_mask[b, :n] = r.get("attention_mask", 1)
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}

    def pad_token_id(self, model: nn.Module) -> int:
        config = getattr(model, "config", None)
        pad = getattr(config, "pad_token_id", None) if config is not None else None
        return int(pad) if isinstance(pad, int) and pad >= 0 else 0

    def forward(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> Any:
        """Run the model; the engine captures the head's input with a hook. Labels are not passed (no loss)."""
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)

    def select(
        self, batch: Mapping[str, torch.Tensor], hidden: torch.Tensor, logits: torch.Tensor | None = None
    ) -> HeadTokens:
        """Pick the labelled positions: h_t `(B, T, d)` predicts labels[t+1] (the HF causal shift)."""
        labels = batch["labels"].to(hidden.device)
        targets = labels[:, 1:]  # (B, T-1)
        mask = targets.ne(IGNORE_INDEX)  # (B, T-1)
        counts = mask.sum(dim=1)  # (B,)
        rows = torch.arange(labels.shape[0], device=hidden.device)[:, None].expand_as(mask)  # (B, T-1)
        sample = rows[mask]  # (M,)
        weight = 1.0 / counts.clamp(min=1).to(torch.float64)  # (B,) c_t = 1/|y_i|
        return HeadTokens(
            hidden=hidden[:, :-1][mask],  # (M, d)
            targets=targets[mask],  # (M,)
            sample=sample,
            weight=weight[sample],  # (M,)
            logits=None if logits is None else logits[:, :-1][mask],  # (M, V)
        )


def is_sharded(module: nn.Module) -> bool:
    """Whether `module`'s parameters are sharded over processes: FSDP2 (DTensor parameters) or DeepSpeed ZeRO-3
    (partitioned parameters, `ds_id`). Then every process must run the same number of forward passes."""
    return any(_is_dtensor(p) or hasattr(p, "ds_id") for p in module.parameters())


def _is_dtensor(tensor: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed support
        return False
    return isinstance(tensor, DTensor)


@torch.no_grad()
def resolve_head_parameters(
    head: nn.Module, hidden_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """W `(V, d)` and b `(V,)` (or None) of the affine map the head applies, whatever wraps it.

    A plain `nn.Linear` (tied or not) is read directly. Anything else (PEFT's `ModulesToSaveWrapper`, a LoRA layer on
    the head, quantised linears) is probed as a black box, b = head(0) and W[:, j] = head(e_j) − b, which yields the
    weight the forward actually uses (active adapter, unmerged LoRA delta) without depending on wrapper internals.
    The engine then checks the result against the head's real output on the first batch.

    A sharded head is gathered whole on every process for the influence pass (a collective: every process calls
    this): FSDP2's DTensor parameters with `full_tensor()` (a probed head runs on the gathered tensors through
    `torch.func.functional_call`), DeepSpeed ZeRO-3's partitioned ones inside `deepspeed.zero.GatheredParameters`
    (W and b are copied out before the partitions are released).
    """
    params = dict(head.named_parameters())
    if any(_is_dtensor(p) for p in params.values()):
        full = {name: p.full_tensor() if _is_dtensor(p) else p for name, p in params.items()}
        return _read_head(head, hidden_size, full)
    if any(hasattr(p, "ds_id") for p in params.values()):
        try:
            import deepspeed
        except ImportError:
            deepspeed = None
        if deepspeed is not None:
            with deepspeed.zero.GatheredParameters(list(params.values()), modifier_rank=None):
                weight, bias = _read_head(head, hidden_size)
                return weight.clone(), None if bias is None else bias.clone()
    if any(p.numel() == 0 for p in params.values()):  # partitioned by something we cannot gather
        raise ValueError(
            "The output head's parameters are sharded (empty on this process) and cannot be gathered here (FSDP2 "
            "DTensors and DeepSpeed ZeRO-3 with deepspeed installed can); gather them first, or use DDP."
        )
    return _read_head(head, hidden_size)


def _read_head(
    head: nn.Module, hidden_size: int | None, params: dict[str, torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """W and b of `head`, with `params` (name -> tensor) standing in for its own parameters when given."""
    if type(head).forward is nn.Linear.forward and isinstance(head, nn.Linear):
        if params is None:
            return head.weight, head.bias
        return params["weight"], params.get("bias")
    values = list(params.values()) if params is not None else list(head.parameters())
    floats = [p for p in values if p.is_floating_point()]
    if not floats:
        raise ValueError(f"Cannot read the weight of the output head {type(head).__name__}: no float parameters.")
    dtype, device = floats[0].dtype, floats[0].device
    d = getattr(head, "in_features", None) or hidden_size
    if d is None:
        raise ValueError(f"Cannot tell the input size of the output head {type(head).__name__}; pass hidden_size.")
    probe = torch.cat([torch.zeros(1, d, dtype=dtype, device=device), torch.eye(d, dtype=dtype, device=device)])
    out = head(probe) if params is None else torch.func.functional_call(head, params, (probe,))  # (d+1, V)
    bias = out[0]
    weight = (out[1:] - bias).T.contiguous()  # (V, d)
    has_bias = bool(bias.ne(0).any()) or any(n.split(".")[-1] == "bias" for n, _ in head.named_parameters())
    return weight, (bias if has_bias else None)
