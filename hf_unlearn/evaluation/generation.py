"""Greedy generation with a refill schedule and a shared-prefix KV cache: the same tokens as batched `generate`.

`generate` keeps every row of a batch until the longest finishes and recomputes the prompt's common head (system
prompt and template, identical for every TOFU question) for every row. `greedy_refill` instead

- computes the longest common prefix of all prompts once (batch of one) and starts every row from a copy of its
  KV cache;
- runs at most `batch_size` rows at a time; a row leaves as soon as it emits a stop token or reaches
  `max_new_tokens`, and freed slots are refilled with the next prompts (in length order, so rows admitted together
  need little padding);
- lays each row out as `[prefix][padding][rest of the prompt][new tokens]`, with attention-mask zeros on the padding
  and the position ids `generate` would give the left-padded prompt (`cumsum(mask) - 1`, then one more per new
  token), so every real token sees the same keys at the same positions as in `generate`.

Only float rounding can differ (other matrix shapes, other padding); greedy tokens change only where two logits are
within that rounding, which `benchmarks/eval_speed.py` counts. Models whose cache is not a plain growing
`DynamicCache` (sliding windows, encoder-decoders) are not supported here: `supports_refill` says so and the caller
falls back to `generate`.
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

__all__ = ["cache_argument", "common_prefix_length", "greedy_refill", "greedy_vllm", "supports_refill"]


def supports_refill(model: torch.nn.Module) -> bool:
    """Decoder-only models whose forward takes position ids and a cache and whose layers all use full attention."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    params = set(inspect.signature(model.forward).parameters)
    if not {"position_ids", "attention_mask"} <= params or not params & {"cache", "past_key_values"}:
        return False
    text = config.get_text_config(decoder=True)
    layer_types = getattr(text, "layer_types", None) or []
    return getattr(text, "sliding_window", None) in (None, 0) or all(t == "full_attention" for t in layer_types)


def common_prefix_length(prompts: Sequence[dict[str, Any]]) -> int:
    """Tokens (ids and mask) shared by every prompt, leaving at least one token of each prompt outside."""
    if not prompts:
        return 0
    first_ids, first_mask = prompts[0]["input_ids"], prompts[0]["attention_mask"]
    limit = min(len(p["input_ids"]) for p in prompts) - 1
    length = 0
    while length < limit and all(
        p["input_ids"][length] == first_ids[length] and p["attention_mask"][length] == first_mask[length]
        for p in prompts
    ):
        length += 1
    return length


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """`generate`'s position ids for a 2D mask: real tokens count 0, 1, ...; masked ones get 0."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def _pad_after_prefix(tensor: torch.Tensor, prefix: int, width: int, dim: int) -> torch.Tensor:
    """Insert `width` zero columns at `prefix` along `dim` (keys/values: dim 2; masks: dim 1)."""
    if width == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = width
    head, tail = tensor.narrow(dim, 0, prefix), tensor.narrow(dim, prefix, tensor.shape[dim] - prefix)
    return torch.cat([head, tensor.new_zeros(shape), tail], dim=dim)


class _Batch:
    """The running rows: their KV cache, 2D attention mask, the position and the token each is fed next."""

    def __init__(self, cache: DynamicCache, mask, positions, last, rows: list[int]):
        self.cache, self.mask, self.positions, self.last, self.rows = cache, mask, positions, last, rows

    def select(self, keep: list[int]) -> None:
        index = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.positions, self.last = self.mask[index], self.positions[index], self.last[index]
        self.rows = [self.rows[i] for i in keep]

    def merge(self, other: _Batch, prefix: int) -> None:
        """Append `other`'s rows, padding the shorter cache between the prefix and the rest."""
        length = max(self.mask.shape[1], other.mask.shape[1])
        kv = []
        for a, b in zip(self.cache.layers, other.cache.layers):
            wa, wb = length - self.mask.shape[1], length - other.mask.shape[1]
            keys = [_pad_after_prefix(a.keys, prefix, wa, 2), _pad_after_prefix(b.keys, prefix, wb, 2)]
            values = [_pad_after_prefix(a.values, prefix, wa, 2), _pad_after_prefix(b.values, prefix, wb, 2)]
            kv.append((torch.cat(keys), torch.cat(values)))
        self.cache = DynamicCache(ddp_cache_data=kv)
        masks = [_pad_after_prefix(m, prefix, length - m.shape[1], 1) for m in (self.mask, other.mask)]
        self.mask = torch.cat(masks)
        self.positions = torch.cat([self.positions, other.positions])
        self.last = torch.cat([self.last, other.last])
        self.rows = self.rows + other.rows


def cache_argument(model: torch.nn.Module) -> str:
    """The forward's name for the KV cache: `cache` from transformers 5.x (`past_key_values` until 5.40)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _forward(model, input_ids, mask, positions, cache: DynamicCache, keeps_logits: bool) -> torch.Tensor:
    """One cached forward (updates `cache`); returns the last position's float32 logits."""
    name = cache_argument(model)
    kwargs = {"logits_to_keep": 1} if keeps_logits else {}
    out = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        **{name: cache},
        **kwargs,
    )
    if getattr(out, name, None) is not cache or not all(type(layer) is DynamicLayer for layer in cache.layers):
        raise TypeError("greedy_refill needs a plain DynamicCache (full attention in every layer).")
    return out.logits[:, -1].to(dtype=torch.float32)


@torch.inference_mode()
def greedy_refill(
    model: torch.nn.Module,
    prompts: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    max_new_tokens: int,
    stop_token_ids: Sequence[int],
    pad_token_id: int,
    reuse_prefix_cache: bool = True,
    refill_fraction: float = 0.25,
) -> list[list[int]]:
    """Greedy new tokens of every prompt (`input_ids`, `attention_mask`), stop token included when one was emitted.

    Args:
        batch_size: rows computed together at most.
        reuse_prefix_cache: compute the prompts' common prefix once and copy its KV cache into every row.
        refill_fraction: refill once at least this fraction of `batch_size` slots is free (or the batch is empty);
            each refill costs one prefill forward and one copy of the cache.

    Prompts are admitted in the given order (sort them by length for little padding).
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size} and {max_new_tokens}.")
    device = next(model.parameters()).device
    keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
    stops = torch.tensor(sorted({int(t) for t in stop_token_ids if t is not None}), device=device)
    prefix = common_prefix_length(prompts) if reuse_prefix_cache else 0
    prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
    if prefix:
        ids = torch.tensor([prompts[0]["input_ids"][:prefix]], device=device)
        mask = torch.tensor([prompts[0]["attention_mask"][:prefix]], device=device)
        cache = DynamicCache()
        _forward(model, ids, mask, _positions(mask), cache, keeps_logits)
        prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
    prefix_mask = torch.tensor(prompts[0]["attention_mask"][:prefix] if prompts else [], dtype=torch.long)

    def prefill(indices: list[int]) -> tuple[_Batch, torch.Tensor]:
        rest = [prompts[i]["input_ids"][prefix:] for i in indices]
        rest_mask = [prompts[i]["attention_mask"][prefix:] for i in indices]
        width = max(len(r) for r in rest)
        ids = torch.tensor([[pad_token_id] * (width - len(r)) + list(r) for r in rest], device=device)
        tail = torch.tensor([[0] * (width - len(m)) + list(m) for m in rest_mask], dtype=torch.long)
        mask = torch.cat([prefix_mask.expand(len(indices), prefix), tail], dim=1).to(device)
        positions = _positions(mask)
        # The copy of the prefix's cache: expanded views, materialised by the cache's first concatenation.
        cache = (
            DynamicCache(
                ddp_cache_data=[
                    (k.expand(len(indices), -1, -1, -1), v.expand(len(indices), -1, -1, -1)) for k, v in prefix_kv
                ]
            )
            if prefix_kv
            else DynamicCache()
        )
        logits = _forward(model, ids, mask, positions[:, prefix:], cache, keeps_logits)
        return _Batch(cache, mask, positions[:, -1] + 1, ids[:, -1], list(indices)), logits

    def decode(batch: _Batch) -> torch.Tensor:
        mask = torch.cat([batch.mask, batch.mask.new_ones(len(batch.rows), 1)], dim=1)
        logits = _forward(model, batch.last[:, None], mask, batch.positions[:, None], batch.cache, keeps_logits)
        batch.mask, batch.positions = mask, batch.positions + 1
        return logits

    outputs: list[list[int]] = [[] for _ in prompts]
    pending, batch = list(range(len(prompts))), None
    while pending or batch is not None:
        logits = decode(batch) if batch is not None else None
        free = batch_size - (len(batch.rows) if batch is not None else 0)
        if pending and (batch is None or free >= max(1, int(refill_fraction * batch_size))):
            admitted, pending = pending[:free], pending[free:]
            new, new_logits = prefill(admitted)
            if batch is None:
                batch, logits = new, new_logits
            else:  # the newcomers join the running rows with their first logits
                batch.merge(new, prefix)
                logits = torch.cat([logits, new_logits])
        tokens = logits.argmax(dim=-1)  # (B,): greedy, the first maximum on ties, as `generate`
        finished = torch.isin(tokens, stops).tolist()
        keep = []
        for r, (row, token) in enumerate(zip(batch.rows, tokens.tolist())):
            outputs[row].append(token)
            if not finished[r] and len(outputs[row]) < max_new_tokens:
                keep.append(r)
        batch.last = tokens
        if not keep:
            batch = None
        elif len(keep) < len(batch.rows):
            batch.select(keep)
    return outputs


def greedy_vllm(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[dict[str, Any]],
    max_new_tokens: int,
    stop_token_ids: Sequence[int],
    gpu_memory_utilization: float = 0.4,
) -> list[list[int]]:
    """Greedy new tokens of every prompt from vLLM (its own continuous batching and paged KV cache).

    vLLM loads weights from a folder, so the model (as it is now, e.g. just unlearned) is saved as safetensors to a
    temporary one first. It runs on the GPU beside the model already there, hence the modest memory share. Prompts
    must be plain token lists: an attention mask with zeros inside a prompt (`reference_attention_mask`) has no vLLM
    equivalent and is refused.
    """
    try:
        from vllm import LLM, SamplingParams
    except ImportError as error:
        raise ImportError("generation_schedule='vllm' needs vLLM: pip install 'hf-unlearn[vllm]'.") from error
    if any(0 in p["attention_mask"] for p in prompts):
        raise ValueError(
            "generation_schedule='vllm' cannot mask tokens inside a prompt (reference_attention_mask); use 'refill'."
        )
    params = SamplingParams(
        temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=list(stop_token_ids), detokenize=False
    )
    with tempfile.TemporaryDirectory(prefix="hf_unlearn_vllm_") as folder:
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        engine = LLM(
            model=folder,
            dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
            gpu_memory_utilization=gpu_memory_utilization,
            trust_remote_code=False,
            seed=0,
        )
        outputs = engine.generate([{"prompt_token_ids": list(p["input_ids"])} for p in prompts], params)
        del engine
    return [list(output.outputs[0].token_ids) for output in outputs]
