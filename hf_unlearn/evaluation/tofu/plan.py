"""The model passes of a TOFU evaluation: `plan_evaluation` tokenizes every distinct (question, answer) pair and every
distinct prompt once, `score_plan` runs the teacher-forced passes and `generate_plan` the greedy answers for ROUGE
(both through `hf_unlearn.evaluation.runner`, sharded over the processes of a launch)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from ...data.chat import encode_prompt, encode_prompt_answer, end_of_turn_token_id, reference_mask
from ...utils import rank_and_world
from ..generation import PromptState, supports_refill
from ..runner import generate_answers, score_prompt_groups
from .data import SPLIT_KINDS

if TYPE_CHECKING:
    from .arguments import TofuEvalArguments

__all__ = [
    "EvalPlan",
    "ItemPlan",
    "Prompt",
    "ScoredSequence",
    "TokenScores",
    "generate_plan",
    "plan_evaluation",
    "score_plan",
    "shares_prompt_states",
]


@dataclass
class ScoredSequence:
    """One distinct (question, answer) pair: the prompt it extends and its answer's tokens and attention mask;
    `vocab_layout`: its log-probabilities rounded as a last-dimension log-softmax rounds (`score_prompt_groups`)."""

    prompt: int
    answer_ids: list[int]
    answer_mask: list[int]
    vocab_layout: bool = False


@dataclass
class Prompt:
    input_ids: list[int]
    attention_mask: list[int]


@dataclass
class ItemPlan:
    """The sequences one evaluation item needs: its answer, the truth ratio's correct and wrong answers, its prompt,
    and (forget and holdout items under the reference conventions) the answer again for Min-K, whose log-probabilities
    the reference takes from a last-dimension log-softmax where its other metrics use cross-entropy's layout."""

    answer: int
    correct: int | None
    wrong: list[int]
    prompt: int
    min_k_answer: int | None = None


@dataclass
class EvalPlan:
    """Everything to run, deduplicated: each (question, answer) pair is scored once and each question generated once,
    whichever splits ask for it."""

    rows: dict[str, list[dict[str, Any]]]
    sequences: list[ScoredSequence]
    prompts: list[Prompt]
    items: dict[str, list[ItemPlan]]
    stop_token_ids: list[int]


class TokenScores(NamedTuple):
    """Per answer token (end-of-turn token included): log p(y_t | x, y_<t) and the teacher-forced argmax."""

    logps: np.ndarray
    preds: np.ndarray


def plan_evaluation(rows: dict[str, list[dict[str, Any]]], tokenizer: Any, args: TofuEvalArguments) -> EvalPlan:
    """Tokenize every distinct (question, answer) pair once and every distinct prompt once.

    A prompt is stored once per distinct token sequence: normally an answer is scored after exactly the generation
    prompt of its question, but under the reference label convention a tokenizer merge across the boundary can give
    the scored context other first tokens (then it is its own prompt, as the reference scores it)."""
    chat = args.chat_format().kwargs()
    reference = args.label_convention == "reference"
    sequences: list[ScoredSequence] = []
    seq_index: dict[tuple[str, str], int] = {}
    prompts: list[Prompt] = []
    prompt_ids_index: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    question_prompt: dict[str, int] = {}  # the generation prompt of each question

    def mask_of(ids: list[int]) -> list[int]:
        return reference_mask(tokenizer, ids) if args.reference_attention_mask else [1] * len(ids)

    def prompt_of(ids: list[int], mask: list[int]) -> int:
        key = (tuple(ids), tuple(mask))
        if key not in prompt_ids_index:
            prompt_ids_index[key] = len(prompts)
            prompts.append(Prompt(list(ids), list(mask)))
        return prompt_ids_index[key]

    def add(question: str, answer: str, vocab_layout: bool = False) -> int:
        key = (question, answer, vocab_layout)
        if key not in seq_index:
            prompt_ids, answer_ids = encode_prompt_answer(tokenizer, question, answer, **chat)
            mask = mask_of(prompt_ids + answer_ids)
            if question not in question_prompt:
                generation_ids = encode_prompt(tokenizer, question, **chat) if reference else prompt_ids
                question_prompt[question] = prompt_of(generation_ids, mask_of(generation_ids))
            seq_index[key] = len(sequences)
            context = prompt_of(prompt_ids, mask[: len(prompt_ids)])
            sequences.append(ScoredSequence(context, answer_ids, mask[len(prompt_ids) :], vocab_layout))
        return seq_index[key]

    items = {}
    for split, split_rows in rows.items():
        kind = SPLIT_KINDS[split]
        items[split] = [
            ItemPlan(
                answer=add(row["question"], row["answer"]),
                correct=add(row["question"], row[kind.correct]) if kind.aggregation else None,
                wrong=[add(row["question"], wrong) for wrong in row["perturbed_answer"]] if kind.aggregation else [],
                prompt=question_prompt[row["question"]],
                min_k_answer=add(row["question"], row["answer"], True)
                if reference and split in ("forget", "holdout")
                else None,
            )
            for row in split_rows
        ]
    stop_ids = sorted({tokenizer.eos_token_id, end_of_turn_token_id(tokenizer, **chat)} - {None})
    return EvalPlan(rows, sequences, prompts, items, stop_ids)


# ------------------------------------------------------------------------------------------------ model passes


def score_plan(
    model: torch.nn.Module,
    plan: EvalPlan,
    args: TofuEvalArguments,
    pad_token_id: int,
    timing: dict[str, float] | None = None,
    show_progress: bool = True,
    stats: dict[str, int] | None = None,
    prompt_states: dict[int, PromptState | None] | None = None,
) -> list[TokenScores]:
    """Teacher-forced scores of every sequence of the plan, split by split (for timing), each pair once; `stats`
    collects token counts (`score_prompt_groups`). With `prompt_states` (a dict, filled here), the generation prompts
    that the scorer computes get their `PromptState` under their prompt index, for `generate_plan`."""
    generated = set(_generated_prompts(plan)) if prompt_states is not None else set()
    scored: list[TokenScores | None] = [None] * len(plan.sequences)
    for split, split_items in plan.items.items():
        tic = time.perf_counter()
        ids = sorted(
            {
                i
                for item in split_items
                for i in (item.answer, item.correct, *item.wrong, item.min_k_answer)
                if i is not None and scored[i] is None
            }
        )
        by_prompt: dict[int, list[int]] = {}
        for i in ids:  # one group per prompt: its answers are scored with the prompt computed once
            by_prompt.setdefault(plan.sequences[i].prompt if args.share_prompts else -1 - i, []).append(i)
        groups = []
        for members in by_prompt.values():
            prompt = plan.prompts[plan.sequences[members[0]].prompt]
            groups.append(
                {
                    "prompt_ids": prompt.input_ids,
                    "prompt_mask": prompt.attention_mask,
                    "answers": [plan.sequences[i].answer_ids for i in members],
                    "answer_masks": [plan.sequences[i].answer_mask for i in members],
                    "vocab_layout": [plan.sequences[i].vocab_layout for i in members],
                }
            )
        prompt_of = [plan.sequences[members[0]].prompt for members in by_prompt.values()]
        states: dict[int, PromptState | None] | None = None
        if prompt_states is not None:  # each generation prompt from its first group
            states = {g: None for g, p in enumerate(prompt_of) if p in generated and p not in prompt_states}
        results = score_prompt_groups(
            model,
            groups,
            batch_size=args.batch_size,
            pad_token_id=pad_token_id,
            desc=f"Scoring {split}",
            show_progress=show_progress,
            stats=stats,
            prompt_states=states,
        )
        for g, state in (states or {}).items():
            if state is not None:
                prompt_states[prompt_of[g]] = state
        for members, group_results in zip(by_prompt.values(), results):
            for i, (logps, preds) in zip(members, group_results):
                scored[i] = TokenScores(logps, preds)
        if timing is not None:
            timing[f"forward_{split}"] = time.perf_counter() - tic
    return scored


def shares_prompt_states(model: torch.nn.Module, args: TofuEvalArguments) -> bool:
    """Whether generation can start from the prompts the scorer computed (`score_plan(prompt_states=...)`): the refill
    schedule with the prefix cache reused, a model it supports, one process."""
    return (
        args.compute_rouge
        and args.generation_schedule == "refill"
        and args.reuse_prefix_cache
        and supports_refill(model)
        and rank_and_world()[1] == 1
    )


def _generated_prompts(plan: EvalPlan) -> list[int]:
    """The prompts generated from (of the splits that report ROUGE), each once, sorted."""
    return sorted(
        {
            item.prompt
            for split, split_items in plan.items.items()
            if SPLIT_KINDS[split].generated
            for item in split_items
        }
    )


def generate_plan(
    model: torch.nn.Module,
    tokenizer: Any,
    plan: EvalPlan,
    args: TofuEvalArguments,
    timing: dict[str, float] | None = None,
    show_progress: bool = True,
    prompt_states: dict[int, PromptState | None] | None = None,
) -> dict[int, str]:
    """Greedy answers to every prompt of the splits that report ROUGE, each question once (prompt index -> text).

    The prompts of all those splits go through one `generate_answers` call (one length-sorted queue), so that
    generation batches fill up whatever the split sizes: with few items per split, per-split calls would decode a
    handful of rows at a time, paying a whole weight read per step for each. Timing: `generate` (all splits).
    `prompt_states` (from `score_plan`): prompts the scorer already computed, not computed again."""
    generations: dict[int, str] = {}
    if not args.compute_rouge:
        return generations
    tic = time.perf_counter()
    ids = _generated_prompts(plan)
    prompts = [{"input_ids": plan.prompts[i].input_ids, "attention_mask": plan.prompts[i].attention_mask} for i in ids]
    texts = generate_answers(
        model,
        tokenizer,
        prompts,
        batch_size=args.generation_batch_size or args.batch_size,
        max_new_tokens=args.max_new_tokens,
        stop_token_ids=plan.stop_token_ids,
        pad_token_id=tokenizer.pad_token_id,
        schedule=args.generation_schedule,
        reuse_prefix_cache=args.reuse_prefix_cache,
        prompt_states=None if not prompt_states else [prompt_states.get(i) for i in ids],
        desc="Generating",
        show_progress=show_progress,
    )
    generations.update(zip(ids, texts))
    if timing is not None:
        timing["generate"] = time.perf_counter() - tic
    return generations
