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
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

__all__ = [
    "PromptState",
    "cache_argument",
    "common_prefix_length",
    "greedy_refill",
    "greedy_vllm",
    "keeps_logits_by_mask",
    "supports_packed_prompts",
    "supports_refill",
]


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


def supports_packed_prompts(model: torch.nn.Module) -> bool:
    """Whether `model` takes a custom 4D additive attention mask (eager/SDPA attention of transformers' masking API)."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None) in ("eager", "sdpa")


def keeps_logits_by_mask(model: torch.nn.Module) -> bool:
    """Whether `model`'s forward takes `logits_to_keep` as a boolean `(batch, length)` mask and then returns the
    logits of the `True` positions only, flattened (transformers' `slice_logits_to_keep`)."""
    if "logits_to_keep" not in inspect.signature(model.forward).parameters:
        return False
    return hasattr(sys.modules.get(type(model).__module__), "slice_logits_to_keep")


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`(B, Q, K)` booleans -> the `(B, 1, Q, K)` additive attention mask (0 where allowed, the dtype's minimum else)."""
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


class PromptState(NamedTuple):
    """A prompt already run through the model: what greedy decoding needs to go on from it.

    `head` holds the keys and values of the prompt's first `start` tokens (one `(keys, values)` pair per layer, batch
    one; usually the head every prompt shares, one tensor for all), `rest` those of its other tokens (same layout), and
    `first_token` is the greedy token after the prompt (the argmax of its last position's logits). The teacher-forced
    scorer hands these over (`score_prompt_groups(prompt_states=...)`), so that generation does not compute the
    prompts again."""

    head: list[tuple[torch.Tensor, torch.Tensor]]
    rest: list[tuple[torch.Tensor, torch.Tensor]]
    start: int
    first_token: int

    def columns(self, layer: int, begin: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of tokens `begin, begin + 1, ...` of the prompt in `layer`, each `(1, heads, n, dim)`."""
        keys, values = self.rest[layer]
        if begin >= self.start:
            return keys[:, :, begin - self.start :], values[:, :, begin - self.start :]
        head_keys, head_values = self.head[layer]
        return (
            torch.cat([head_keys[:, :, begin : self.start], keys], dim=2),
            torch.cat([head_values[:, :, begin : self.start], values], dim=2),
        )


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


# Rows of a packed prefill hold prompts (beyond the shared head) up to this many tokens in all: attention within a row
# grows with its square, so many prompts make several rows.
_PACKED_ROW = 256


def _packed_prefill(
    model: torch.nn.Module,
    prompts: Sequence[dict[str, Any]],
    prefix: int,
    prefix_kv: list[tuple[torch.Tensor, torch.Tensor]],
    pad_token_id: int,
) -> list[PromptState]:
    """Run the prompts beyond their shared `prefix` without padding them to one length: each prompt is a segment of a
    packed row, under a 4D attention mask by which each token sees the prefix and the earlier tokens of its own
    segment (unmasked ones only, as `generate` does) and with `generate`'s position ids. Returns each prompt's state."""
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    lengths = [len(p["input_ids"]) - prefix for p in prompts]
    # Rows: as few as `_PACKED_ROW` allows, each prompt (longest first) to the shortest row so far.
    rows: list[list[int]] = [[] for _ in range(max(1, -(-sum(lengths) // max(_PACKED_ROW, max(lengths)))))]
    filled = [0] * len(rows)
    for i in sorted(range(len(prompts)), key=lambda i: (-lengths[i], i)):
        r = min(range(len(rows)), key=lambda r: (filled[r], r))
        rows[r].append(i)
        filled[r] += lengths[i]
    rows = [row for row in rows if row]
    width = max(filled)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    allowed = torch.zeros((len(rows), width, prefix + width), dtype=torch.bool)
    allowed[:, :, prefix:] = torch.eye(width, dtype=torch.bool)  # every token (padding too) sees itself
    wanted = torch.zeros((len(rows), width), dtype=torch.bool)
    place: dict[int, tuple[int, int]] = {}  # prompt -> (row, first column)
    for r, row in enumerate(rows):
        column = 0
        for i in row:
            n, mask = lengths[i], torch.tensor(prompts[i]["attention_mask"], dtype=torch.long)
            ids[r, column : column + n] = torch.tensor(prompts[i]["input_ids"][prefix:])
            positions[r, column : column + n] = _positions(mask)[prefix:]
            seen = mask.bool()
            allowed[r, column : column + n, :prefix] = seen[:prefix]
            causal = torch.ones(n, n, dtype=torch.bool).tril() & seen[None, prefix:]
            allowed[r, column : column + n, prefix + column : prefix + column + n] |= causal
            wanted[r, column + n - 1] = True
            place[i] = (r, column)
            column += n
    cache = (
        DynamicCache(
            ddp_cache_data=[(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1)) for k, v in prefix_kv]
        )
        if prefix_kv
        else DynamicCache()
    )
    out = model(
        input_ids=ids.to(device),
        attention_mask=additive_mask(allowed, dtype).to(device),
        position_ids=positions.to(device),
        use_cache=True,
        logits_to_keep=wanted.to(device),
        **{cache_argument(model): cache},
    )
    logits = out.logits.reshape(-1, out.logits.shape[-1])  # one row per wanted position, row-major
    if logits.shape[0] != len(prompts):
        raise RuntimeError(f"{type(model).__name__} did not return the logits of the positions it was asked for.")
    first = logits.float().argmax(dim=-1).tolist()
    order = {i: k for k, i in enumerate(sorted(place, key=lambda i: place[i]))}  # wanted positions, row-major
    states = []
    for i in range(len(prompts)):
        r, column = place[i]
        cols = slice(prefix + column, prefix + column + lengths[i])
        rest = [(layer.keys[r : r + 1, :, cols], layer.values[r : r + 1, :, cols]) for layer in cache.layers]
        states.append(PromptState(prefix_kv, rest, prefix, first[order[i]]))
    return states


def _batch_from_states(
    states: Sequence[PromptState],
    prompts: Sequence[dict[str, Any]],
    rows: list[int],
    prefix: int,
    prefix_kv: list[tuple[torch.Tensor, torch.Tensor]],
    prefix_mask: torch.Tensor,
) -> tuple[_Batch, torch.Tensor]:
    """The running rows of prompts already computed: each row's cache is the prefix, zeros (masked) and the rest of
    its prompt, as a left-padded prefill would lay it out; returns the batch and the first greedy tokens."""
    lengths = [len(p["input_ids"]) - prefix for p in prompts]
    width = max(lengths)
    kv = []
    for layer in range(len(states[0].rest)):
        k0, v0 = states[0].rest[layer]
        keys = k0.new_zeros((len(states), k0.shape[1], prefix + width, k0.shape[3]))
        values = v0.new_zeros((len(states), v0.shape[1], prefix + width, v0.shape[3]))
        if prefix:
            keys[:, :, :prefix], values[:, :, :prefix] = prefix_kv[layer]
        for r, (state, n) in enumerate(zip(states, lengths)):
            k, v = state.columns(layer, prefix)
            keys[r, :, prefix + width - n :], values[r, :, prefix + width - n :] = k[0], v[0]
        kv.append((keys, values))
    device = kv[0][0].device
    tail = torch.tensor([[0] * (width - n) + list(p["attention_mask"][prefix:]) for p, n in zip(prompts, lengths)])
    mask = torch.cat([prefix_mask.expand(len(states), prefix), tail], dim=1).to(device)
    first = torch.tensor([state.first_token for state in states], device=device)
    batch = _Batch(DynamicCache(ddp_cache_data=kv), mask, _positions(mask)[:, -1] + 1, first, list(rows))
    return batch, first


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
    prompt_states: Sequence[PromptState | None] | None = None,
) -> list[list[int]]:
    """Greedy new tokens of every prompt (`input_ids`, `attention_mask`), stop token included when one was emitted.

    Args:
        batch_size: rows computed together at most.
        reuse_prefix_cache: compute the prompts' common prefix once and copy its KV cache into every row.
        refill_fraction: refill once at least this fraction of `batch_size` slots is free (or the batch is empty);
            each refill costs one prefill forward and one copy of the cache.
        prompt_states: per prompt, its `PromptState` if it was already computed (by the teacher-forced scorer), else
            None; those prompts are not computed again.

    Prompts are admitted in the given order (sort them by length for little padding). Admitted prompts not yet
    computed are prefilled packed (`_packed_prefill`: no padding) where the model takes a 4D attention mask and keeps
    logits by mask, else left-padded to the longest.
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size} and {max_new_tokens}.")
    device = next(model.parameters()).device
    keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
    packed = supports_packed_prompts(model) and keeps_logits_by_mask(model)
    if prompt_states is not None and len(prompt_states) != len(prompts):
        raise ValueError(f"prompt_states has {len(prompt_states)} entries for {len(prompts)} prompts.")
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

    def padded_prefill(indices: list[int]) -> tuple[_Batch, torch.Tensor]:
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
        tokens = logits.argmax(dim=-1)
        return _Batch(cache, mask, positions[:, -1] + 1, tokens, list(indices)), tokens

    def prefill(indices: list[int]) -> tuple[_Batch, torch.Tensor]:
        """The admitted rows and their first greedy tokens."""
        states = [prompt_states[i] if prompt_states is not None else None for i in indices]
        if not packed and any(state is None for state in states):
            return padded_prefill(indices)
        missing = [k for k, state in enumerate(states) if state is None]
        if missing:
            computed = _packed_prefill(model, [prompts[indices[k]] for k in missing], prefix, prefix_kv, pad_token_id)
            for k, state in zip(missing, computed):
                states[k] = state
        return _batch_from_states(states, [prompts[i] for i in indices], indices, prefix, prefix_kv, prefix_mask)

    def decode(batch: _Batch) -> torch.Tensor:
        mask = torch.cat([batch.mask, batch.mask.new_ones(len(batch.rows), 1)], dim=1)
        logits = _forward(model, batch.last[:, None], mask, batch.positions[:, None], batch.cache, keeps_logits)
        batch.mask, batch.positions = mask, batch.positions + 1
        return logits.argmax(dim=-1)  # (B,): greedy, the first maximum on ties, as `generate`

    outputs: list[list[int]] = [[] for _ in prompts]
    pending, batch = list(range(len(prompts))), None
    while pending or batch is not None:
        tokens = decode(batch) if batch is not None else None
        free = batch_size - (len(batch.rows) if batch is not None else 0)
        if pending and (batch is None or free >= max(1, int(refill_fraction * batch_size))):
            admitted, pending = pending[:free], pending[free:]
            new, new_tokens = prefill(admitted)
            if batch is None:
                batch, tokens = new, new_tokens
            else:  # the newcomers join the running rows with their first tokens
                batch.merge(new, prefix)
                tokens = torch.cat([tokens, new_tokens])
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
