"""LM-head influence: the removal score Δ_i of every forget sample (IMU, arXiv:2508.01620, eq. 4;
`docs/influence.md`).

Δ_i = (1/N)·⟨g_f, H⁻¹ G_i⟩ with G_i = ∂ℓ_i/∂W̃ the head gradient of sample i, g_f = (1/N) Σ_i G_i and H a damped
curvature of the head from the forget set only. Two passes:

1. one forward pass per micro-batch (no graph) captures the head's inputs h_t (and, when already in the compute
   dtype, its logits) at labelled tokens; softmax-CE gradients w.r.t. the head are analytic,
   G_i = Σ_t c_t (p_t − e_{y_t}) h̃_tᵀ, so g_f and H are accumulated without autograd;
2. with A = H⁻¹ g_f `(V, d1)`, Δ_i = (1/N) Σ_t c_t (p_t − e_{y_t})ᵀ A h̃_t: one extra head-sized product per token,
   memory O(V·d) and never O(N·V·d). The h_t of pass 1 are cached, so pass 2 needs no second forward.

Under `torch.distributed`, ranks take contiguous shards, all-reduce the sums (then divide by the global N), and
assemble the scores with one more all-reduce of disjoint shards, so every rank returns the same full vector in
dataset order. A sharded model (FSDP2, DeepSpeed ZeRO-3) works too: the head is gathered whole on every rank
(`resolve_head_parameters`), and ranks with fewer batches run filler forward passes (results discarded), because each
forward of a sharded model is a collective that every rank must join.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from ..utils import IGNORE_INDEX, rank_and_world
from .arguments import InfluenceArguments
from .curvature import make_curvature
from .task import CausalLMHeadTask, HeadTokens, is_sharded, resolve_head_parameters

__all__ = ["InfluenceResult", "compute_influence", "lm_head_influence"]


@dataclass
class InfluenceResult:
    """Scores with what produced them. `damping` is the absolute λ actually added to H."""

    scores: torch.Tensor  # (N,)
    args: InfluenceArguments
    damping: float
    num_samples: int
    num_tokens: int
    seconds: dict[str, float] = field(default_factory=dict)


def lm_head_influence(
    model: nn.Module,
    dataset: Any,
    args: InfluenceArguments | None = None,
    *,
    task: CausalLMHeadTask | None = None,
    **overrides: Any,
) -> torch.Tensor:
    """Removal score Δ_i of every sample of `dataset`, in order: `(N,)` on the CPU, float32 (float64 if the head is).

    Δ_i > 0: removing sample i would raise the forget loss, i.e. it helps the model fit the forget set.

    Args:
        model: a causal LM (plain, PEFT-wrapped, or DDP-wrapped) whose output embedding is the head.
        dataset: a `datasets.Dataset` or a list of dicts with `input_ids`, `labels` (−100 = ignored, shifted inside)
            and optionally `attention_mask`; lengths may differ.
        args: an `InfluenceArguments`; keyword `overrides` replace its fields (e.g. `curvature="exact"`).
        task: model-specific hooks (defaults to `CausalLMHeadTask`: mean NLL over labelled tokens).

    >>> scores = lm_head_influence(model, forget_dataset, damping=0.1, batch_size=8)  # doctest: +SKIP
    """
    return compute_influence(model, dataset, args, task=task, **overrides).scores


def compute_influence(
    model: nn.Module,
    dataset: Any,
    args: InfluenceArguments | None = None,
    *,
    task: CausalLMHeadTask | None = None,
    **overrides: Any,
) -> InfluenceResult:
    """Like `lm_head_influence`, returning an `InfluenceResult` (scores, resolved λ, token count, timings)."""
    args = _resolve_args(args, overrides)
    task = task or CausalLMHeadTask()
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module  # DDP's forward syncs buffers: uneven shards would deadlock
    num_samples = len(dataset)
    if num_samples == 0:
        raise ValueError("The dataset is empty: influence scores need at least one sample.")
    rows = [task.row(dataset[i], i) for i in range(num_samples)]
    empty = [i for i, r in enumerate(rows) if task.num_scored_tokens(r) == 0]
    if empty:
        raise ValueError(
            f"{len(empty)} sample(s) have no labelled target token (all labels -100 after the causal shift), so "
            f"their loss is undefined; first indices: {empty[:10]}. Drop them or fix the labels."
        )

    rank, world = _rank_and_world(args)
    start, stop = _shard_bounds(num_samples, world, rank)
    local = list(range(start, stop))
    if args.sort_by_length:
        local.sort(key=lambda i: -task.length(rows[i]))  # longest first: a memory failure shows up at once
    batches = [local[k : k + args.batch_size] for k in range(0, len(local), args.batch_size)]
    # Forward passes of a sharded model gather parameters collectively: every rank runs as many (fillers are discarded).
    fillers = _max_over_ranks(len(batches), world) - len(batches) if world > 1 and is_sharded(model) else 0
    filler = batches[0] if batches else [0]

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    runner = None
    try:
        head = task.get_head(model)
        weight, bias = resolve_head_parameters(head, getattr(getattr(model, "config", None), "hidden_size", None))
        dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
        # A sharded model may free its gathered parameters at any time (FSDP2's root keeps them after a forward): copy.
        head_w = weight.detach().to(dtype, copy=is_sharded(model))  # (V, d)
        if bias is not None:
            head_w = torch.cat([head_w, bias.detach().to(dtype)[:, None]], dim=1)  # a copy  # (V, d+1): W̃ = [W | b]
        vocab, d1 = head_w.shape
        bad = [
            i
            for i, r in enumerate(rows)
            if not bool(((r["labels"] == IGNORE_INDEX) | ((r["labels"] >= 0) & (r["labels"] < vocab))).all())
        ]
        if bad:
            raise ValueError(f"Labels must be {IGNORE_INDEX} or token ids in [0, {vocab}); samples {bad[:10]} are not.")
        curv = make_curvature(args.curvature, vocab, d1, dtype, head_w.device, args.exact_max_params)
        budget = _Budget(args.max_chunk_bytes, vocab * head_w.element_size())
        runner = _Runner(model, task, head, rows, head_w, bias is not None, dtype)
        seconds: dict[str, float] = {}
        show = args.progress_bar and rank == 0

        with torch.no_grad(), torch.autocast(head_w.device.type, enabled=False):
            # pass 1: Σ_i G_i and the curvature statistics, streamed per block of whole samples
            t0 = time.perf_counter()
            cache: list[tuple[HeadTokens, torch.Tensor]] = []
            num_tokens = 0
            for step, batch in enumerate(_progress(batches, show, "influence pass 1/2 (gradient, curvature)")):
                tokens, index = runner.tokens(batch, check=step == 0)
                num_tokens += tokens.targets.numel()
                for blk in _blocks(tokens, budget):
                    probs = runner.probs(blk)  # (m, V)
                    curv.update(probs, blk.targets, runner.feats(blk), blk.weight.to(dtype), _counts(blk))
                if args.cache_features:
                    tokens.logits = None  # (M, V) rows are too big to keep; pass 2 recomputes them from h̃
                    cache.append((tokens, index))
            for _ in range(fillers):
                runner.tokens(filler)
            num_tokens = _all_reduce_sums(curv.state(), num_tokens, world)
            curv.finalize(num_samples, args.damping, args.relative_damping)
            solved = curv.solve()  # (V, d1) A = H⁻¹ g_f
            seconds["pass1"] = time.perf_counter() - t0

            # pass 2: Δ_i = (1/N) Σ_t c_t (p_t − e_{y_t})ᵀ A h̃_t
            t0 = time.perf_counter()
            local_scores = torch.zeros(num_samples, dtype=dtype, device=head_w.device)
            source = cache if args.cache_features else (runner.tokens(b) for b in batches)
            for tokens, index in _progress(source, show, "influence pass 2/2 (scores)", total=len(batches)):
                for blk in _blocks(tokens, budget):
                    probs = runner.probs(blk)  # (m, V)
                    a_h = runner.feats(blk) @ solved.T  # (m, V) A h̃_t
                    per_token = (probs * a_h).sum(-1) - a_h.gather(1, blk.targets[:, None]).squeeze(1)  # (m,)
                    local_scores.index_add_(0, index[blk.sample], per_token * blk.weight.to(dtype))
            for _ in range(0 if args.cache_features else fillers):
                runner.tokens(filler)
            del cache
            local_scores /= num_samples
            scores = _gather_scores(local_scores, num_samples, world)
            seconds["pass2"] = time.perf_counter() - t0
    finally:
        for module, mode in modes:
            module.training = mode
        if runner is not None:
            runner.close()
    return InfluenceResult(scores.cpu(), args, curv.damping, num_samples, num_tokens, seconds)


def _resolve_args(args: InfluenceArguments | None, overrides: dict[str, Any]) -> InfluenceArguments:
    args = args or InfluenceArguments()
    known = {f.name for f in dataclasses.fields(InfluenceArguments)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"Unknown influence argument(s) {unknown}; valid ones: {sorted(known)}.")
    return dataclasses.replace(args, **overrides) if overrides else args


class _Runner:
    """Runs the model with a hook on the head and turns batches into scored tokens and head products."""

    def __init__(self, model, task, head, rows, head_w, has_bias, dtype) -> None:
        self.model, self.task, self.rows, self.head_w = model, task, rows, head_w
        self.has_bias, self.dtype = has_bias, dtype
        self.pad_id = task.pad_token_id(model)
        embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        self.device = embeddings.weight.device if embeddings is not None else next(model.parameters()).device
        self.captured: dict[str, Any] = {}
        self.handle = head.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output) -> None:
        self.captured["input"] = args[0] if args else next(iter(kwargs.values()))
        self.captured["output"] = output

    def close(self) -> None:
        self.handle.remove()

    def tokens(self, batch: Sequence[int], check: bool = False) -> tuple[HeadTokens, torch.Tensor]:
        inputs = self.task.collate([self.rows[i] for i in batch], self.pad_id)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        self.captured.clear()
        outputs = self.task.forward(self.model, inputs)
        if "input" not in self.captured:
            raise RuntimeError("The output head was not called during the forward pass; cannot capture its input.")
        hidden = self.captured["input"]  # (B, T, d)
        head_out = self.captured["output"]  # (B, T, V)
        reuse = (
            isinstance(head_out, torch.Tensor)
            and head_out.dtype == self.dtype
            and head_out.shape[:2] == hidden.shape[:2]
        )  # reusing the head's logits saves a V×d product/token
        tokens = self.task.select(inputs, hidden, head_out if reuse else None)
        device = self.head_w.device
        tokens.hidden = tokens.hidden.to(device=device, dtype=self.dtype)
        tokens.targets, tokens.sample = tokens.targets.to(device), tokens.sample.to(device)
        tokens.weight = tokens.weight.to(device)
        if tokens.logits is not None:
            tokens.logits = tokens.logits.to(device)
        if check:
            self._check_head(inputs, outputs, hidden)
        self.captured.clear()
        index = torch.as_tensor(list(batch), device=self.head_w.device)  # batch row -> dataset index
        return tokens, index

    def _check_head(self, inputs, outputs, hidden) -> None:
        """The scores assume logits = W h + b feed the softmax: verify it on the first batch (PEFT, tying, caps)."""
        head_out = self.captured["output"][:1]  # (1, T, V): the first row is enough and cheap
        z = self.feats_of(hidden[0].to(self.head_w.device, self.dtype)) @ self.head_w.T  # (T, V)
        ref = head_out[0].to(z.device, self.dtype)
        low = head_out.dtype in (torch.float16, torch.bfloat16)
        tol = (3e-2 if low else 1e-3) * max(1.0, float(ref.abs().max()))
        err = float((z - ref).abs().max())
        if err > tol:
            raise ValueError(
                f"The output head is not the affine map W h + b read from it (max logit error {err:.3g}); "
                "LM-head influence needs a linear head (wrappers such as PEFT are resolved by probing)."
            )
        logits = getattr(outputs, "logits", None)
        if isinstance(logits, torch.Tensor) and logits.shape[1:] == head_out.shape[1:]:
            err = float((logits[:1].to(self.dtype) - head_out.to(logits.device, self.dtype)).abs().max())
            if err > tol:
                raise ValueError(
                    f"The model changes the head's output before its softmax (max difference {err:.3g}, e.g. logit "
                    "soft-capping or scaling); scores would not match the model's loss. Not supported."
                )

    def feats_of(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self.has_bias:
            return hidden
        return torch.cat([hidden, hidden.new_ones(hidden.shape[0], 1)], dim=1)  # (m, d+1) h̃ = [h, 1]

    def feats(self, blk: HeadTokens) -> torch.Tensor:
        return self.feats_of(blk.hidden)

    def probs(self, blk: HeadTokens) -> torch.Tensor:
        logits = blk.logits if blk.logits is not None else self.feats(blk) @ self.head_w.T  # (m, V)
        return torch.softmax(logits, dim=-1)


@dataclass
class _Budget:
    max_bytes: int
    bytes_per_token: int  # one V-row of logits/probabilities


def _blocks(tokens: HeadTokens, budget: _Budget):
    """Split a batch's tokens into runs of whole samples that fit the memory budget (at least one sample)."""
    counts = torch.bincount(tokens.sample).tolist()
    start = first = 0
    used = 0
    for s, n in enumerate(counts):
        cost = 3 * n * budget.bytes_per_token  # logits, probabilities/errors, A h̃
        if s > first and used + cost > budget.max_bytes:
            yield _slice(tokens, start, start + sum(counts[first:s]))
            start += sum(counts[first:s])
            first, used = s, 0
        used += cost
    if counts:
        yield _slice(tokens, start, len(tokens.targets))


def _slice(tokens: HeadTokens, lo: int, hi: int) -> HeadTokens:
    logits = None if tokens.logits is None else tokens.logits[lo:hi]
    return HeadTokens(tokens.hidden[lo:hi], tokens.targets[lo:hi], tokens.sample[lo:hi], tokens.weight[lo:hi], logits)


def _counts(blk: HeadTokens) -> torch.Tensor:
    counts = torch.bincount(blk.sample - blk.sample[0])  # (s,) tokens per sample, consecutive samples
    return counts[counts > 0]


def _progress(items, show: bool, desc: str, total: int | None = None):
    if not show:
        return items
    return tqdm(items, desc=desc, total=total if total is not None else len(items), leave=False)


def _rank_and_world(args: InfluenceArguments) -> tuple[int, int]:
    return rank_and_world() if args.shard_across_ranks else (0, 1)


def _shard_bounds(n: int, world: int, rank: int) -> tuple[int, int]:
    """Contiguous, balanced shards (sizes differ by at most one): concatenating them restores dataset order."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _collective_device(fallback: torch.device) -> torch.device:
    """NCCL reduces CUDA tensors only, gloo is safest on CPU tensors; other backends get the tensor's device."""
    backend = dist.get_backend()
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    if backend == "gloo":
        return torch.device("cpu")
    return fallback


def _max_over_ranks(value: int, world: int) -> int:
    if world == 1:
        return value
    buf = torch.tensor([value], dtype=torch.long, device=_collective_device(torch.device("cpu")))
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return int(buf)


def _all_reduce_sums(tensors: list[torch.Tensor], num_tokens: int, world: int) -> int:
    """Sum the curvature/gradient statistics (in place) and the token count over ranks."""
    if world == 1:
        return num_tokens
    device = _collective_device(tensors[0].device)
    for t in tensors:
        buf = t.to(device)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        t.copy_(buf)
    count = torch.tensor([num_tokens], dtype=torch.long, device=device)
    dist.all_reduce(count, op=dist.ReduceOp.SUM)
    return int(count)


def _gather_scores(local: torch.Tensor, num_samples: int, world: int) -> torch.Tensor:
    """Every rank wrote only its shard of the (N,) vector (zeros elsewhere): a sum-reduce assembles it exactly."""
    if world == 1:
        return local
    device = _collective_device(local.device)
    buf = local.to(device)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(local.device)
