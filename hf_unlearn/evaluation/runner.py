"""Batched teacher-forced scoring and greedy generation, sharded over processes.

Batches are formed once, globally (sequences sorted by length, fixed batch size), and whole batches are dealt to
ranks round-robin; every sequence is therefore computed in exactly the same batch whatever the number of processes,
and a multi-process run gives the same numbers as a single-process one.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import CompileConfig, DynamicCache, GenerationConfig

from ..utils import IGNORE_INDEX, all_gather_objects, rank_and_world, token_logprobs
from .generation import (
    PromptState,
    additive_mask,
    cache_argument,
    common_prefix_length,
    greedy_refill,
    greedy_vllm,
    keeps_logits_by_mask,
    supports_packed_prompts,
    supports_refill,
)

__all__ = [
    "GENERATION_SCHEDULES",
    "generate_answers",
    "keeps_logits_by_mask",
    "score_prompt_groups",
    "score_sequences",
    "supports_packed_prompts",
]


def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    # Longest first: an out-of-memory error shows up in the first batch, not at the end.
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def _run_sharded(batches: list[list[int]], work, desc: str, show_progress: bool) -> dict[int, Any]:
    """Run `work(batch) -> {index: result}` on this rank's batches and gather all results on every rank."""
    rank, world = rank_and_world()
    results: dict[int, Any] = {}
    for batch in tqdm(batches[rank::world], desc=desc, disable=not show_progress or rank != 0, leave=False):
        results.update(work(batch))
    return {k: v for part in all_gather_objects(results) for k, v in part.items()}


def _left_pad(rows: Iterable[Sequence[int]], value: int, length: int) -> torch.Tensor:
    return torch.tensor([[value] * (length - len(row)) + list(row) for row in rows], dtype=torch.long)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def score_sequences(
    model: torch.nn.Module,
    sequences: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    pad_token_id: int,
    desc: str = "Scoring",
    show_progress: bool = True,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Teacher-forced forward of each sequence; returns per sequence `(token_logps, predictions)` over its answer.

    Args:
        sequences: dicts with `input_ids` (prompt + answer), `attention_mask` and `num_answer_tokens` (the answer is
            the last `num_answer_tokens` tokens, end-of-turn token included).

    `token_logps[t] = log p(y_t | x, y_<t)` and `predictions[t]` the argmax at the same position, both float32/int64
    arrays of length `num_answer_tokens`. Sequences are left-padded, so every answer ends at the last position and only
    the logits of the last `max answer length + 1` positions are computed (`logits_to_keep`) where the model allows it;
    position ids count real tokens only, so padding changes nothing.
    """
    device = _device(model)
    keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    def work(batch: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        rows = [sequences[i] for i in batch]
        length = max(len(row["input_ids"]) for row in rows)
        keep = max(row["num_answer_tokens"] for row in rows) + 1
        input_ids = _left_pad((row["input_ids"] for row in rows), pad_token_id, length)
        attention_mask = _left_pad((row["attention_mask"] for row in rows), 0, length)
        real = _left_pad(([1] * len(row["input_ids"]) for row in rows), 0, length)
        position_ids = (real.cumsum(-1) - 1).clamp(min=0)
        labels = torch.full((len(rows), keep), IGNORE_INDEX, dtype=torch.long)  # (B, K)
        for r, row in enumerate(rows):
            n = row["num_answer_tokens"]
            labels[r, keep - n :] = torch.tensor(row["input_ids"][-n:])
        kwargs = {"logits_to_keep": keep} if keeps_logits else {}
        logits = model(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            position_ids=position_ids.to(device),
            use_cache=False,
            **kwargs,
        ).logits[:, -keep:]  # (B, K, V)
        logps, _ = token_logprobs(logits, labels.to(device))  # (B, K-1)
        preds = logits[:, :-1].argmax(dim=-1)  # (B, K-1)
        logps, preds = logps.float().cpu().numpy(), preds.cpu().numpy()
        return {
            i: (
                logps[r, keep - 1 - rows[r]["num_answer_tokens"] :].copy(),
                preds[r, keep - 1 - rows[r]["num_answer_tokens"] :].copy(),
            )
            for r, i in enumerate(batch)
        }

    results = _run_sharded(_batches([len(s["input_ids"]) for s in sequences], batch_size), work, desc, show_progress)
    return [results[i] for i in range(len(sequences))]


# A row joins a batch only if the batch's longest row is at most this fraction longer: padding is computed like real
# tokens, and on a CPU a forward pass more costs far less than the padding it saves.
_MAX_PADDING = 0.1


def _group_batches(sizes: Sequence[int], lengths: Sequence[int], max_answers: int) -> list[list[int]]:
    """Longest rows first; each batch holds rows until it has `max_answers` answers (at least one row) or the next
    row would be padded by more than `_MAX_PADDING` of the batch's longest row."""
    if max_answers < 1:
        raise ValueError(f"batch_size must be >= 1, got {max_answers}.")
    batches, current, count = [], [], 0
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        if current and (count + sizes[i] > max_answers or lengths[i] < (1 - _MAX_PADDING) * lengths[current[0]]):
            batches.append(current)
            current, count = [], 0
        current.append(i)
        count += sizes[i]
    return batches + ([current] if current else [])


class _AnswerTree(NamedTuple):
    """One prompt and its answers as a token tree: the prompt's tokens, then each distinct answer prefix once.

    `ids`, `mask`, `parent` and `depth` are per node (prompt nodes first, a node after its parent); `predictors[n][t]`
    is the node whose logits predict token `t` of answer `n` (the prompt's last node for `t = 0`)."""

    ids: list[int]
    mask: list[int]
    parent: list[int]
    depth: list[int]
    predictors: list[list[int]]
    num_prompt: int


def _answer_tree(group: dict[str, Any]) -> _AnswerTree:
    prompt_ids, prompt_mask = list(group["prompt_ids"]), list(group["prompt_mask"])
    p = len(prompt_ids)
    if p == 0:
        raise ValueError("score_prompt_groups needs a prompt of at least one token for every group.")
    ids, mask, parent, depth = list(prompt_ids), list(prompt_mask), list(range(-1, p - 1)), list(range(p))
    children: dict[tuple[int, int, int], int] = {}
    predictors = []
    for answer, answer_mask in zip(group["answers"], group["answer_masks"], strict=True):
        node, predictor = p - 1, []
        for token, m in zip(answer, answer_mask, strict=True):
            predictor.append(node)
            key = (node, int(token), int(m))
            if key not in children:  # a new prefix: one more node
                children[key] = len(ids)
                ids.append(int(token))
                mask.append(int(m))
                parent.append(node)
                depth.append(depth[node] + 1)
            node = children[key]
        predictors.append(predictor)
    return _AnswerTree(ids, mask, parent, depth, predictors, p)


def _tree_attention(tree: _AnswerTree) -> np.ndarray:
    """`allowed[i, j]`: node `i` attends to node `j` (an ancestor of `i`, or `i` itself, whose mask is 1)."""
    n, p = len(tree.ids), tree.num_prompt
    allowed = np.zeros((n, n), dtype=bool)
    allowed[:p, :p] = np.tril(np.ones((p, p), dtype=bool))
    for i in range(p, n):
        allowed[i] = allowed[tree.parent[i]]
        allowed[i, i] = True
    return allowed & np.asarray(tree.mask, dtype=bool)[None, :]


def _log_softmax_as_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """float32 log-softmax of `(positions, vocabulary)` logits, reduced over a `(vocabulary, position)` view as
    cross-entropy reduces `(batch, vocabulary, length)` logits (`token_logprobs`, and the reference's scoring): in
    float32 a sum over ~50k exponentials rounds differently in the contiguous last-dimension kernel (by up to ~2e-4
    for SmolLM2), so the same layout keeps the same values."""
    return torch.log_softmax(logits.float().T, dim=0).T


@torch.inference_mode()
def score_prompt_groups(
    model: torch.nn.Module,
    groups: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    pad_token_id: int,
    desc: str = "Scoring",
    show_progress: bool = True,
    stats: dict[str, int] | None = None,
    share_prefix: bool = True,
    prompt_states: dict[int, PromptState | None] | None = None,
) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Like `score_sequences` for several answers to one prompt, computing the prompt and every shared answer prefix
    only once.

    Args:
        groups: dicts with `prompt_ids`, `prompt_mask` and lists `answers` / `answer_masks` (token ids and attention
            mask of each answer, end-of-turn token included); optionally `vocab_layout`, a flag per answer: its
            log-probabilities from a log-softmax over the vocabulary's own (last) dimension, as
            `torch.log_softmax(logits, dim=-1)` rounds, instead of the cross-entropy layout (float32 rounds the two
            differently; some reference metrics use one, some the other). The same answer may be given twice, once
            each way: its tokens share the tree's nodes, so it costs no forward. (Models without 4D masks, scored
            one sequence per answer, use the cross-entropy layout throughout.)
        batch_size: answers per forward pass.
        stats: if given, this process's token counts are added to it: `prompt` and `answer` tokens,
            `shared_prefix` (the prompts' common head, computed once), `answer_nodes` (distinct answer prefixes, the
            answer positions computed), `positions` (all computed, padding included) and `logit_positions`
            (positions whose logits were computed).
        share_prefix: compute the prompts' common head once and share its KV cache (models with a plain cache).
        prompt_states: group index -> None for the groups whose prompt is then generated from: each gets its
            prompt's `PromptState` (its KV cache and the greedy token after it), for `greedy_refill`, so that
            generation does not compute the prompt again. Only prompts without masked tokens get one (the scorer's
            position ids count every token, as the reference scores; generation's count unmasked tokens only) and only
            in one process (the states stay where they were computed); the others keep None.

    Each group is one row laid out as a token tree: the prompt, then every distinct answer prefix once (TOFU's
    perturbed answers of a question often begin alike), with a 4D attention mask under which each position sees
    exactly its own prefix (the prompt and its ancestors in the tree, never another branch) and position ids that
    count its depth: the same computation as one sequence per answer, each shared token computed once. The LM head
    runs only at the positions whose next token is scored (`logits_to_keep` as a boolean mask, where the model takes
    one; otherwise over the row's answer end). Models whose attention does not take a 4D mask fall back to one
    sequence per answer.
    """
    if stats is not None:
        for key in ("prompt", "shared_prefix", "answer", "answer_nodes", "positions", "logit_positions"):
            stats.setdefault(key, 0)
    if not supports_packed_prompts(model):
        flat = [(g, j) for g, group in enumerate(groups) for j in range(len(group["answers"]))]
        scored = score_sequences(
            model,
            [_as_sequence(groups[g], j) for g, j in flat],
            batch_size=batch_size,
            pad_token_id=pad_token_id,
            desc=desc,
            show_progress=show_progress,
        )
        out: list[list[Any]] = [[] for _ in groups]
        for (g, _), result in zip(flat, scored):
            out[g].append(result)
        return out
    device, dtype = _device(model), next(model.parameters()).dtype
    by_mask = keeps_logits_by_mask(model)
    keeps_logits = by_mask or "logits_to_keep" in inspect.signature(model.forward).parameters
    trees = [_answer_tree(group) for group in groups]
    # The prompts' common head (system prompt and template) is computed once, its KV cache shared by every row.
    prefix = (
        common_prefix_length(
            [{"input_ids": t.ids[: t.num_prompt], "attention_mask": t.mask[: t.num_prompt]} for t in trees]
        )
        if share_prefix and len(trees) > 1 and supports_refill(model)
        else 0
    )
    prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
    if prefix:
        prefix_mask = torch.tensor(trees[0].mask[:prefix], dtype=torch.bool)
        allowed = torch.ones(prefix, prefix, dtype=torch.bool).tril() & prefix_mask[None, :]
        cache = DynamicCache()
        model(
            input_ids=torch.tensor([trees[0].ids[:prefix]], device=device),
            attention_mask=additive_mask(allowed[None], dtype).to(device),
            position_ids=torch.arange(prefix, device=device)[None],
            use_cache=True,
            **{cache_argument(model): cache},
        )
        prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
        if stats is not None:
            stats["positions"] += prefix
            stats["shared_prefix"] += prefix
    lengths = [len(tree.ids) - prefix for tree in trees]  # positions of each row beyond the shared prefix
    wants_state = (
        {g for g in prompt_states if 0 not in groups[g]["prompt_mask"]}
        if prompt_states is not None and supports_refill(model) and rank_and_world()[1] == 1
        else set()
    )

    def work(batch: list[int]) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
        length = max(lengths[g] for g in batch)
        input_ids = torch.full((len(batch), length), pad_token_id, dtype=torch.long)
        position_ids = torch.zeros((len(batch), length), dtype=torch.long)
        # Keys: the shared prefix, then the row. Padding sees only itself.
        allowed = np.zeros((len(batch), length, prefix + length), dtype=bool)
        allowed[:, :, prefix:] = np.eye(length, dtype=bool)
        wanted = torch.zeros((len(batch), length), dtype=torch.bool)  # positions whose logits are read
        for r, g in enumerate(batch):
            tree, start = trees[g], length - lengths[g] - prefix  # row column of tree node k: start + k
            input_ids[r, start + prefix :] = torch.tensor(tree.ids[prefix:])
            position_ids[r, start + prefix :] = torch.tensor(tree.depth[prefix:])
            tree_allowed = _tree_attention(tree)[prefix:]
            allowed[r, start + prefix :, :prefix] = tree_allowed[:, :prefix]
            allowed[r, start + prefix :, prefix + start + prefix :] = tree_allowed[:, prefix:]
            for predictor in tree.predictors:
                wanted[r, [start + node for node in predictor]] = True
        mask = additive_mask(torch.from_numpy(allowed), dtype)
        if by_mask:
            kwargs, kept = {"logits_to_keep": wanted.to(device)}, wanted
        else:  # the last `keep` positions of every row (answers are at the end of left-padded rows)
            keep = max(lengths[g] + prefix - trees[g].num_prompt for g in batch) + 1
            kept = torch.zeros_like(wanted)
            kept[:, -keep:] = True
            kwargs = {"logits_to_keep": keep} if keeps_logits else {}
            if not keeps_logits:
                kept[:] = True
        if prefix_kv:
            expanded = [(k.expand(len(batch), -1, -1, -1), v.expand(len(batch), -1, -1, -1)) for k, v in prefix_kv]
            kwargs[cache_argument(model)] = DynamicCache(ddp_cache_data=expanded)
        elif wants_state.intersection(batch):
            kwargs[cache_argument(model)] = DynamicCache()
        if stats is not None:
            stats["prompt"] += sum(trees[g].num_prompt for g in batch)
            stats["answer"] += sum(len(a) for g in batch for a in groups[g]["answers"])
            stats["answer_nodes"] += sum(len(trees[g].ids) - trees[g].num_prompt for g in batch)
            stats["positions"] += input_ids.numel()
            stats["logit_positions"] += int(kept.sum())
        logits = model(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            position_ids=position_ids.to(device),
            use_cache=cache_argument(model) in kwargs,
            **kwargs,
        ).logits
        logits = logits.reshape(-1, logits.shape[-1])  # one row per kept position, row-major
        if by_mask and logits.shape[0] != int(wanted.sum()):
            raise RuntimeError(f"{type(model).__name__} did not return the logits of the positions it was asked for.")
        row_of = torch.full(kept.shape, -1, dtype=torch.long)
        row_of[kept] = torch.arange(int(kept.sum()))
        logps = _log_softmax_as_cross_entropy(logits)  # (P, V)
        preds = logits.argmax(dim=-1).cpu().numpy()  # (P,)
        results = {}
        for r, g in enumerate(batch):
            tree, start = trees[g], length - lengths[g] - prefix
            rows = [row_of[r, [start + node for node in predictor]] for predictor in tree.predictors]
            answers = groups[g]["answers"]
            index = torch.cat(rows).to(device)
            labels = torch.tensor([t for a in answers for t in a], dtype=torch.long, device=device)
            values = logps[index, labels].cpu().numpy()
            cuts = np.cumsum([0] + [len(a) for a in answers])
            vocab_layout = groups[g].get("vocab_layout") or [False] * len(answers)
            for (a, b), flagged in zip(itertools.pairwise(cuts), vocab_layout, strict=True):
                if flagged:
                    rows_j = logits[index[a:b]].float()  # (L, V)
                    values[a:b] = torch.log_softmax(rows_j, dim=-1).gather(-1, labels[a:b, None])[:, 0].cpu().numpy()
            flat_preds = preds[index.cpu().numpy()]
            results[g] = [(values[a:b].copy(), flat_preds[a:b].copy()) for a, b in itertools.pairwise(cuts)]
            if g in wants_state:  # the prompt's keys and values beyond the shared prefix, and its greedy next token
                columns = slice(prefix + start + prefix, prefix + start + tree.num_prompt)
                layers = kwargs[cache_argument(model)].layers
                rest = [
                    (lay.keys[r : r + 1, :, columns].clone(), lay.values[r : r + 1, :, columns].clone())
                    for lay in layers
                ]
                prompt_states[g] = PromptState(prefix_kv, rest, prefix, int(results[g][0][1][0]))
        return results

    batches = _group_batches([len(g["answers"]) for g in groups], lengths, batch_size)
    results = _run_sharded(batches, work, desc, show_progress)
    return [results[g] for g in range(len(groups))]


def _as_sequence(group: dict[str, Any], j: int) -> dict[str, Any]:
    answer = list(group["answers"][j])
    return {
        "input_ids": list(group["prompt_ids"]) + answer,
        "attention_mask": list(group["prompt_mask"]) + list(group["answer_masks"][j]),
        "num_answer_tokens": len(answer),
    }


# Prompts per independent refill loop (in multiples of the batch size): blocks are formed globally and dealt to ranks,
# so that every prompt is computed with the same companions whatever the number of processes.
_REFILL_BLOCK = 2
GENERATION_SCHEDULES = ("refill", "generate", "static_compile", "vllm")


@torch.inference_mode()
def generate_answers(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    max_new_tokens: int,
    stop_token_ids: Sequence[int],
    pad_token_id: int,
    schedule: str = "refill",
    reuse_prefix_cache: bool = True,
    prompt_states: Sequence[PromptState | None] | None = None,
    desc: str = "Generating",
    show_progress: bool = True,
) -> list[str]:
    """Greedy generation (KV cache) from each prompt (`input_ids`, `attention_mask`).

    Stops at any of `stop_token_ids` (eos and the chat template's end-of-turn token) or after `max_new_tokens`; only
    the new tokens are decoded, up to the first stop token, skipping special tokens.

    Args:
        schedule: `"refill"` (`greedy_refill`: finished rows leave the batch and free slots take the next prompts;
            models it does not support use `"generate"`), `"generate"` (fixed length-sorted batches of
            `batch_size` left-padded prompts through `model.generate`), `"static_compile"` (the same batches, all
            padded to one shape, through `generate` with a static KV cache and its `torch.compile`d decoding step:
            one compilation, for GPUs) or `"vllm"` (`greedy_vllm`, the `hf-unlearn[vllm]` extra, one process).
        reuse_prefix_cache: with `"refill"`, compute the prompts' common prefix once and reuse its KV cache.
        prompt_states: with `"refill"`, per prompt its `PromptState` from the scorer (or None): not computed again.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    if schedule not in GENERATION_SCHEDULES:
        raise ValueError(f"schedule must be one of {GENERATION_SCHEDULES}, got {schedule!r}.")
    device = _device(model)
    stops = sorted({int(t) for t in stop_token_ids if t is not None})

    def decode(new: list[int]) -> str:
        cut = next((t for t, token in enumerate(new) if token in stops), len(new))
        return tokenizer.decode(new[:cut], skip_special_tokens=True).strip()

    lengths = [len(p["input_ids"]) for p in prompts]
    if schedule == "refill" and supports_refill(model):
        order = [i for batch in _batches(lengths, batch_size) for i in batch]  # longest first
        block = _REFILL_BLOCK * batch_size
        blocks = [order[start : start + block] for start in range(0, len(order), block)]

        def refill(indices: list[int]) -> dict[int, str]:
            new = greedy_refill(
                model,
                [prompts[i] for i in indices],
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
                stop_token_ids=stops,
                pad_token_id=pad_token_id,
                reuse_prefix_cache=reuse_prefix_cache,
                prompt_states=None if prompt_states is None else [prompt_states[i] for i in indices],
            )
            return {i: decode(tokens) for i, tokens in zip(indices, new)}

        results = _run_sharded(blocks, refill, desc, show_progress)
        return [results[i] for i in range(len(prompts))]
    if schedule == "vllm":
        if rank_and_world()[1] > 1:
            raise ValueError("generation_schedule='vllm' runs in one process (vLLM schedules the GPU itself).")
        return [decode(tokens) for tokens in greedy_vllm(model, tokenizer, prompts, max_new_tokens, stops)]

    static = schedule == "static_compile"
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        eos_token_id=stops,
        pad_token_id=pad_token_id,
        bos_token_id=getattr(tokenizer, "bos_token_id", None),
        # A static cache makes every decoding step one shape, which `generate` compiles once (on CUDA-like devices,
        # or anywhere with `_compile_all_devices`); every batch gets the same rows and length, so nothing recompiles.
        cache_implementation="static" if static else None,
        compile_config=CompileConfig(fullgraph=False, dynamic=False) if static else None,
    )
    longest = max(lengths, default=0)

    def work(batch: list[int]) -> dict[int, str]:
        rows = [prompts[i] for i in batch]
        if static:  # full batches of the longest prompt's length (extra rows repeat the first and are dropped)
            rows += [rows[0]] * (batch_size - len(rows))
        length = longest if static else max(len(row["input_ids"]) for row in rows)
        input_ids = _left_pad((row["input_ids"] for row in rows), pad_token_id, length).to(device)
        attention_mask = _left_pad((row["attention_mask"] for row in rows), 0, length).to(device)
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
        return {i: decode(output[r, length:].tolist()) for r, i in enumerate(batch)}

    results = _run_sharded(_batches(lengths, batch_size), work, desc, show_progress)
    return [results[i] for i in range(len(prompts))]
