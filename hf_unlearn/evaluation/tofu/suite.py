"""`evaluate_tofu`: the TOFU suite from one teacher-forced forward per (prompt, answer) pair and greedy generation.

The metrics are the plain functions of `hf_unlearn.evaluation.metrics`, composed explicitly in four steps:
`plan_evaluation` (rows -> the distinct sequences and prompts to run), `score_plan` (teacher-forced passes),
`generate_plan` (greedy answers for ROUGE) and `aggregate` (per-item values -> the split-level metrics); the splits
and what each is scored for are in `hf_unlearn.evaluation.tofu.data`.

The suite computes and returns; it writes and caches nothing. Results on disk, reused when nothing that changes
them changed, are the benchmark's cached evaluation stage (`hf-unlearn eval`, `hf_unlearn.tasks.tofu`).

>>> summary = evaluate_tofu(model, tokenizer, TofuEvalArguments(forget_split="forget05"), data_dir="tofu/")  # doctest: +SKIP
>>> summary["forget_quality"], summary["model_utility"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ...data.chat import chat_format_notice
from ...utils import rank_and_world
from ..kernels import prepacked_linears
from ..mia import SEQUENCE_ATTACKS, as_attack_sequences, sequence_attack_scores
from .aggregate import aggregate, item_values
from .arguments import TofuEvalArguments
from .data import check_holdout, load_eval_rows, tofu_split_configs
from .plan import generate_plan, plan_evaluation, score_plan, shares_prompt_states
from .retain import RetainReference, load_retain_reference, select_retain_items

__all__ = ["check_pad_token", "evaluate_rows", "evaluate_tofu"]


def evaluate_tofu(
    model: torch.nn.Module,
    tokenizer: Any,
    args: TofuEvalArguments | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    retain_logs: str | os.PathLike | None = None,
    model_name: str | None = None,
    show_progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Evaluate `model` on TOFU; returns the summary (metric name -> value, plus provenance) with per-item values
    under `"items"`.

    Args:
        args: what to compute (`TofuEvalArguments`); keyword `overrides` replace its fields.
        data_dir: local folder of TOFU JSON(L) files; None loads `locuslab/TOFU` from the Hub.
        retain_logs: a retain-model evaluation (an `hf-unlearn eval` output folder, its summary.json, or an
            open-unlearning TOFU_EVAL.json). Gives forget_quality (KS test of truth ratios) and the AUC_retain of
            privleak; without it forget_quality is None and AUC_retain = 0.5 (stated in `notices`).
        model_name: recorded as the model's name (default: `model.config._name_or_path`).

    Runs on every process of an initialised process group (torchrun / accelerate launch): each process takes a share
    of the batches, and all get the same result.
    """
    started = time.perf_counter()
    args = dataclasses.replace(args or TofuEvalArguments(), **overrides)
    check_pad_token(tokenizer)
    tic = time.perf_counter()
    retain_ref = load_retain_reference(retain_logs, args.forget_split) if retain_logs is not None else None
    rows = load_eval_rows(args.forget_split, data_dir, args.item_limit)
    loading = time.perf_counter() - tic
    return evaluate_rows(
        model,
        tokenizer,
        args,
        rows,
        retain_ref,
        data_dir=data_dir,
        model_name=model_name,
        show_progress=show_progress,
        timing={"load_data": loading},
        started=started,
    )


def evaluate_rows(
    model: torch.nn.Module,
    tokenizer: Any,
    args: TofuEvalArguments,
    rows: dict[str, list[dict[str, Any]]],
    retain_ref: RetainReference | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    model_name: str | None = None,
    show_progress: bool = True,
    timing: dict[str, float] | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """`evaluate_tofu` on rows already loaded (`load_eval_rows`) and a retain reference already read: for callers
    that look at the data first (the cached stage fingerprints it). `data_dir` is only recorded as the source."""
    started = time.perf_counter() if started is None else started
    timing = dict(timing or {})
    check_pad_token(tokenizer)
    check_holdout(rows, args.forget_split)
    if retain_ref is not None:  # the retain model's values of exactly these forget items
        retain_ref = select_retain_items(retain_ref, rows["forget"])

    def say(message: str) -> None:
        if show_progress and rank_and_world()[0] == 0:
            print(message, file=sys.stderr, flush=True)

    tic = time.perf_counter()
    plan = plan_evaluation(rows, tokenizer, args)
    timing["format"] = time.perf_counter() - tic
    was_training = model.training
    model.eval()
    try:
        forward_tokens: dict[str, int] = {}
        # Generation starts from the prompts as the scorer computed them (their KV cache and next token), not again.
        states = {} if shares_prompt_states(model, args) else None
        tic = time.perf_counter()
        with prepacked_linears(model, args.onednn_linears) as packed_linears:
            timing["prepack"] = time.perf_counter() - tic
            scored = score_plan(
                model, plan, args, tokenizer.pad_token_id, timing, show_progress, forward_tokens, states
            )
            generations = generate_plan(model, tokenizer, plan, args, timing, show_progress, states)
        del states
    finally:
        model.train(was_training)

    tic = time.perf_counter()
    items = item_values(plan, scored, generations, tokenizer, args)
    if any(attack in SEQUENCE_ATTACKS for attack in args.mia_attacks):
        timing["sequence_attacks"] = _add_sequence_attacks(model, plan, items, args)
    summary, notices = aggregate(items, retain_ref, args)
    formatting_notice = chat_format_notice(tokenizer, args.chat_format())
    formatting_used = _formatting_used(tokenizer, args)
    if formatting_notice:
        notices.append(formatting_notice)
    timing["metrics"] = time.perf_counter() - tic
    timing["total"] = time.perf_counter() - started
    summary.update(
        {
            "notices": notices,
            "num_items": {split: len(values) for split, values in items.items()},
            "model": {
                "name_or_path": model_name or getattr(getattr(model, "config", None), "_name_or_path", None),
                "class": type(model).__name__,
                "dtype": str(next(model.parameters()).dtype),
                "num_parameters": sum(p.numel() for p in model.parameters()),
            },
            "data": {
                "source": "hub:locuslab/TOFU" if data_dir is None else str(Path(data_dir).resolve()),
                "configs": tofu_split_configs(args.forget_split),
            },
            # As applied: a system prompt the formatting did not use is not recorded.
            "settings": {**args.settings(), "system_prompt": formatting_used["system_prompt"]},
            "formatting_used": formatting_used,
            "world_size": rank_and_world()[1],
            "timing_s": timing,
            "forward_tokens": forward_tokens,
            "onednn_linears": packed_linears,  # layers that ran the prepacked oneDNN kernel
        }
    )
    for notice in notices:
        say(f"Note: {notice}")
    return dict(summary, items=items)


def _add_sequence_attacks(model: torch.nn.Module, plan: Any, items: dict[str, list], args: TofuEvalArguments) -> float:
    """The MIAs that need their own pass (Min-K++, GradNorm, Reference), on the forget and holdout items; returns the
    seconds taken."""
    attacks = [attack for attack in args.mia_attacks if attack in SEQUENCE_ATTACKS]
    tic = time.perf_counter()
    reference = None
    if "reference" in attacks:
        from ...models import load_model_and_tokenizer

        reference, _ = load_model_and_tokenizer(args.mia_reference_model, device=next(model.parameters()).device)
        if getattr(reference.config, "vocab_size", None) != getattr(model.config, "vocab_size", None):
            raise ValueError(
                f"mia_reference_model {args.mia_reference_model!r} has another vocabulary than the evaluated model: "
                "the Reference attack compares both models on the same tokens."
            )
    was_training = model.training
    model.eval()
    try:
        for split in ("forget", "holdout"):
            scores = sequence_attack_scores(
                model, as_attack_sequences(plan, plan.items[split]), attacks, k=args.min_k, reference_model=reference
            )
            for values, extra in zip(items[split], scores):
                values.update(extra)
    finally:
        model.train(was_training)
    return time.perf_counter() - tic


def check_pad_token(tokenizer: Any) -> None:
    """A one-line error, before any work, for a tokenizer without a pad token (batches are padded)."""
    if tokenizer.pad_token_id is None:
        raise ValueError(
            "The tokenizer has no pad token: set one, or call hf_unlearn.models.ensure_pad_token(tokenizer) (pads "
            "with eos, as the CLI does)."
        )


def _formatting_used(tokenizer: Any, args: TofuEvalArguments) -> dict[str, Any]:
    """The formatting actually applied (a tokenizer without a chat template uses no system prompt and no template)."""
    chat_template = args.use_chat_template is not False and bool(getattr(tokenizer, "chat_template", None))
    return {
        "chat_template": chat_template,
        "system_prompt": args.system_prompt if chat_template else None,
        "reference_attention_mask": args.reference_attention_mask,
        "label_convention": args.label_convention,
    }
