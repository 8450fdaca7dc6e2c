"""`evaluate_tofu`: the TOFU suite from one teacher-forced forward per (prompt, answer) pair and greedy generation.

The metrics are the plain functions of `hf_unlearn.evaluation.metrics`, composed here explicitly in four steps:
`plan_evaluation` (rows -> the distinct sequences and prompts to run), `score_plan` (teacher-forced passes),
`generate_plan` (greedy answers for ROUGE) and `aggregate` (per-item values -> the split-level metrics). Per split:

| split (config)                             | metrics                                                              |
|--------------------------------------------|----------------------------------------------------------------------|
| forget (`forgetXX_perturbed`)              | Q_A_Prob, ROUGE, truth ratio (paraphrased vs perturbed), ES, EM, MIAs |
| holdout (`holdoutXX`)                      | MIAs (the non-member side of the AUC)                                |
| retain (`retain_perturbed`)                | Q_A_Prob, ROUGE, truth ratio (paraphrased vs perturbed) -> utility   |
| real_authors / world_facts (`*_perturbed`) | normalised prob, ROUGE, truth ratio (answer vs perturbed) -> utility |

>>> summary = evaluate_tofu(model, tokenizer, TofuEvalArguments(forget_split="forget05"), data_dir="tofu/")  # doctest: +SKIP
>>> summary["forget_quality"], summary["model_utility"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ...data.chat import (
    chat_format_notice,
    encode_prompt,
    encode_prompt_answer,
    end_of_turn_token_id,
    reference_mask,
)
from ...evaluation import metrics as M
from ...evaluation.runner import GENERATION_SCHEDULES, generate_answers, score_prompt_groups
from ...runtime.distributed import broadcast_object, is_main_process, num_processes, wait_for_everyone
from ...runtime.hashing import model_sha256, sha256_json
from ...runtime.versions import environment_versions
from .data import TofuFormat, load_tofu, tofu_split_configs
from .results import RetainReference, load_retain_reference, read_matching_results, write_results

__all__ = [
    "EVAL_PRESETS",
    "MAIN_METRICS",
    "MIA_ATTACKS",
    "SPLITS",
    "TEACHER_FORCED_UTILITY",
    "UTILITY_COMPONENTS",
    "EvalPlan",
    "TofuEvalArguments",
    "aggregate",
    "evaluate_tofu",
    "generate_plan",
    "item_values",
    "load_eval_rows",
    "plan_evaluation",
    "score_plan",
]

MIA_ATTACKS = ("min_k", "loss", "zlib")
SPLITS = ("forget", "holdout", "retain", "real_authors", "world_facts")
# The summary's headline metrics (open-unlearning's names), in the order tables print them, and model utility's nine
# components: the one list every report and the CLI use.
MAIN_METRICS = (
    "forget_quality",
    "model_utility",
    "forget_Q_A_Prob",
    "forget_Q_A_ROUGE",
    "forget_truth_ratio",
    "extraction_strength",
    "exact_memorization",
    "mia_min_k",
    "privleak",
    "mia_loss",
    "mia_zlib",
)
# The harmonic mean of the six components below that need no generation: the utility signal left to cheap,
# teacher-forced evaluations (callbacks, trajectories), always computed.
TEACHER_FORCED_UTILITY = "model_utility_teacher_forced"
UTILITY_COMPONENTS = (
    "retain_Q_A_Prob",
    "retain_Q_A_ROUGE",
    "retain_Truth_Ratio",
    "ra_Q_A_Prob_normalised",
    "ra_Q_A_ROUGE",
    "ra_Truth_Ratio",
    "wf_Q_A_Prob_normalised",
    "wf_Q_A_ROUGE",
    "wf_Truth_Ratio",
)


# Named settings (`TofuEvalArguments.preset`, CLI `--preset`). `reference`: the TOFU reference evaluator's conventions,
# so that numbers can be compared with published ones (docs/metrics.md#reference-quirks). `teacher_forced_only`: no
# generation (ROUGE and model_utility are None), the cheap mode for callbacks and sweeps.
EVAL_PRESETS: dict[str, dict[str, Any]] = {
    "reference": {"label_convention": "reference", "reference_attention_mask": True, "es_reference_floor": True},
    "teacher_forced_only": {"compute_rouge": False},
}


class _Split(NamedTuple):
    correct: str | None  # the "correct" answer of the truth ratio
    generated: bool  # greedy generation for ROUGE
    aggregation: str | None  # truth-ratio aggregation


_SPLIT_KINDS = {
    "forget": _Split("paraphrased_answer", True, "closer_to_1"),
    "holdout": _Split(None, False, None),
    "retain": _Split("paraphrased_answer", True, "true_better"),
    "real_authors": _Split("answer", True, "true_better"),
    "world_facts": _Split("answer", True, "true_better"),
}
_UTILITY_PREFIX = {"retain": "retain", "real_authors": "ra", "world_facts": "wf"}


@dataclass
class TofuEvalArguments(TofuFormat):
    """What `evaluate_tofu` computes: splits, item limits, batch sizes, generation budget, formatting (the fields of
    `TofuFormat`) and MIA options. The recipe's `evaluation` section, `hf-unlearn eval`'s flags (`HfArgumentParser`)
    and the function read this one dataclass, so every default is written here only.

    Parameters:
        forget_split (`str`, defaults to `"forget05"`):
            `forget01`, `forget05` or `forget10` (holdout and retain model follow: holdout05, retain95).
        batch_size (`int`, defaults to `16`):
            Answers per teacher-forced forward pass.
        generation_batch_size (`int` or `None`, defaults to `None`):
            Prompts generated together at most (None: `batch_size`).
        generation_schedule (`str`, defaults to `"refill"`):
            `"refill"`: a finished answer leaves the batch at once and its slot takes the next prompt (a manual
            greedy loop over the KV cache; same tokens as `generate` up to float rounding, see
            `docs/metrics.md#generation`). `"generate"`: the previous path, fixed length-sorted batches through
            `model.generate`. Models `"refill"` does not support (sliding-window attention, encoder-decoders) use
            `"generate"`. For GPUs: `"static_compile"` (`generate` with a static KV cache and a compiled decoding
            step, every batch padded to one shape) and `"vllm"` (the `hf-unlearn[vllm]` extra; one process, not with
            `reference_attention_mask`).
        reuse_prefix_cache (`bool`, defaults to `True`):
            With `"refill"`: compute the head shared by every prompt (system prompt and template) once and start
            every row from a copy of its KV cache.
        max_new_tokens (`int`, defaults to `200`):
            Greedy generation budget for ROUGE (the reference's 200).
        max_items (`int` or `None`, defaults to `None`):
            Evaluate only the first N items of every split (quick looks; not comparable with full runs).
        max_forget_items, max_holdout_items, max_retain_items, max_real_authors_items, max_world_facts_items
            (`int` or `None`): per-split limits that override `max_items`, e.g. all forget/holdout items (forget
            quality, privleak) with model utility on documented subsets.
        compute_rouge (`bool`, defaults to `True`):
            False skips generation: ROUGE metrics and model_utility are None.
        share_prompts (`bool`, defaults to `True`):
            Score all answers to one question in one packed row, computing the prompt once (same numbers up to
            float rounding; needs eager/SDPA attention, else one sequence per answer).
        es_reference_floor (`bool`, defaults to `True`):
            Extraction strength's reference quirk: ES = 1/n when no suffix matches (False: 0).
        min_k (`float`, defaults to `0.4`):
            Fraction k of the Min-K% attack.
        mia_attacks (`list[str]`, defaults to `["min_k", "loss", "zlib"]`):
            Attacks whose AUC is reported as `mia_<name>`; `min_k` is always computed (privleak uses it).
    """

    forget_split: str = field(default="forget05", metadata={"help": "forget01, forget05 or forget10."})
    batch_size: int = field(default=16, metadata={"help": "Answers per teacher-forced forward pass."})
    generation_batch_size: int | None = field(default=None, metadata={"help": "Prompts generated together at most."})
    generation_schedule: str = field(
        default="refill",
        metadata={
            "help": "'refill' (finished rows leave, slots take the next prompt), 'generate' (fixed batches); "
            "GPU backends 'static_compile' (static cache + torch.compile) and 'vllm' (the [vllm] extra).",
            "choices": list(GENERATION_SCHEDULES),
        },
    )
    reuse_prefix_cache: bool = field(
        default=True, metadata={"help": "Compute the prompts' shared head once and reuse its KV cache."}
    )
    max_new_tokens: int = field(default=200, metadata={"help": "Greedy generation budget for ROUGE."})
    max_items: int | None = field(default=None, metadata={"help": "First N items of every split only."})
    max_forget_items: int | None = field(default=None, metadata={"help": "First N forget items (overrides max_items)."})
    max_holdout_items: int | None = field(default=None, metadata={"help": "First N holdout items."})
    max_retain_items: int | None = field(default=None, metadata={"help": "First N retain_perturbed items."})
    max_real_authors_items: int | None = field(default=None, metadata={"help": "First N real-author items."})
    max_world_facts_items: int | None = field(default=None, metadata={"help": "First N world-fact items."})
    compute_rouge: bool = field(default=True, metadata={"help": "Generate answers (ROUGE, model utility)."})
    share_prompts: bool = field(default=True, metadata={"help": "Compute each question's prompt once."})
    es_reference_floor: bool = field(default=True, metadata={"help": "ES = 1/n when no suffix matches (reference)."})
    min_k: float = field(
        default=0.4,
        metadata={"help": "k of the Min-K (percent) membership attack: fraction of lowest-probability tokens."},
    )
    mia_attacks: list[str] = field(default_factory=lambda: list(MIA_ATTACKS), metadata={"help": "Reported MIAs."})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TofuEvalArguments:
        """Arguments from a named preset (`EVAL_PRESETS`) with `overrides` on top, e.g.
        `TofuEvalArguments.preset("reference", forget_split="forget10")`."""
        if name not in EVAL_PRESETS:
            raise ValueError(f"Unknown evaluation preset {name!r}; use one of {', '.join(EVAL_PRESETS)}.")
        return cls(**{**EVAL_PRESETS[name], **overrides})

    def __post_init__(self) -> None:
        super().__post_init__()
        tofu_split_configs(self.forget_split)
        for name in ("batch_size", "max_new_tokens", "generation_batch_size", *self.item_limit_fields()):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if self.generation_schedule not in GENERATION_SCHEDULES:
            raise ValueError(
                f"generation_schedule must be one of {list(GENERATION_SCHEDULES)}, got {self.generation_schedule!r}."
            )
        if self.generation_schedule == "vllm":
            if importlib.util.find_spec("vllm") is None:
                raise ValueError("generation_schedule='vllm' needs vLLM: pip install 'hf-unlearn[vllm]'.")
            if self.reference_attention_mask:
                raise ValueError(
                    "generation_schedule='vllm' cannot apply reference_attention_mask (it masks tokens inside a "
                    "prompt); use 'refill' or 'generate'."
                )
        unknown = sorted(set(self.mia_attacks) - set(MIA_ATTACKS))
        if unknown:
            raise ValueError(f"Unknown MIA attack(s) {unknown}; use {list(MIA_ATTACKS)}.")
        if not 0 < self.min_k <= 1:
            raise ValueError(f"min_k must be in (0, 1], got {self.min_k}.")

    @staticmethod
    def item_limit_fields() -> list[str]:
        return ["max_items"] + [f"max_{split}_items" for split in SPLITS]

    def item_limit(self, split: str) -> int | None:
        limit = getattr(self, f"max_{split}_items")
        return self.max_items if limit is None else limit

    def settings(self) -> dict[str, Any]:
        """What shapes the numbers, for the fingerprint and `summary.json` (batch sizes included: they change the
        float rounding)."""
        values = dataclasses.asdict(self)
        values["mia_attacks"] = sorted(set(self.mia_attacks) | {"min_k"})
        values["generation_batch_size"] = self.generation_batch_size or self.batch_size
        return values


# ------------------------------------------------------------------------------------------------ plan


@dataclass
class ScoredSequence:
    """One distinct (question, answer) pair: the prompt it extends and its answer's tokens and attention mask."""

    prompt: int
    answer_ids: list[int]
    answer_mask: list[int]


@dataclass
class Prompt:
    input_ids: list[int]
    attention_mask: list[int]


@dataclass
class ItemPlan:
    """The sequences one evaluation item needs: its answer, the truth ratio's correct and wrong answers, its prompt."""

    answer: int
    correct: int | None
    wrong: list[int]
    prompt: int


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


def _validate_rows(rows: list[dict[str, Any]], split: str, config: str) -> None:
    if not rows:
        raise ValueError(f"The {split} split ({config}) is empty.")
    kind = _SPLIT_KINDS[split]
    required = list(
        dict.fromkeys(["question", "answer"] + ([kind.correct, "perturbed_answer"] if kind.aggregation else []))
    )
    missing = [column for column in required if column not in rows[0]]
    if missing:
        raise ValueError(f"The {split} split ({config}) lacks column(s) {missing}; it has {sorted(rows[0])}.")
    for index, row in enumerate(rows):
        for column in required:
            value = row.get(column)
            if column == "perturbed_answer":
                if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
                    raise ValueError(f"{config} row {index}: perturbed_answer must be a non-empty list of strings.")
            elif not isinstance(value, str) or not value.strip():
                raise ValueError(f"{config} row {index}: {column!r} must be a non-empty string.")


def load_eval_rows(args: TofuEvalArguments, data_dir: str | os.PathLike | None) -> dict[str, list[dict[str, Any]]]:
    """The rows of every split (checked, and cut to the item limits)."""
    rows = {}
    for split, config in tofu_split_configs(args.forget_split).items():
        split_rows = load_tofu(config, data_dir).to_list()
        _validate_rows(split_rows, split, config)
        limit = args.item_limit(split)
        rows[split] = split_rows[:limit] if limit else split_rows
    return rows


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

    def add(question: str, answer: str) -> int:
        key = (question, answer)
        if key not in seq_index:
            prompt_ids, answer_ids = encode_prompt_answer(tokenizer, question, answer, **chat)
            mask = mask_of(prompt_ids + answer_ids)
            if question not in question_prompt:
                generation_ids = encode_prompt(tokenizer, question, **chat) if reference else prompt_ids
                question_prompt[question] = prompt_of(generation_ids, mask_of(generation_ids))
            seq_index[key] = len(sequences)
            context = prompt_of(prompt_ids, mask[: len(prompt_ids)])
            sequences.append(ScoredSequence(context, answer_ids, mask[len(prompt_ids) :]))
        return seq_index[key]

    items = {}
    for split, split_rows in rows.items():
        kind = _SPLIT_KINDS[split]
        items[split] = [
            ItemPlan(
                answer=add(row["question"], row["answer"]),
                correct=add(row["question"], row[kind.correct]) if kind.aggregation else None,
                wrong=[add(row["question"], wrong) for wrong in row["perturbed_answer"]] if kind.aggregation else [],
                prompt=question_prompt[row["question"]],
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
) -> list[TokenScores]:
    """Teacher-forced scores of every sequence of the plan, split by split (for timing), each pair once; `stats`
    collects token counts (`score_prompt_groups`)."""
    scored: list[TokenScores | None] = [None] * len(plan.sequences)
    for split, split_items in plan.items.items():
        tic = time.perf_counter()
        ids = sorted(
            {
                i
                for item in split_items
                for i in (item.answer, item.correct, *item.wrong)
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
                }
            )
        results = score_prompt_groups(
            model,
            groups,
            batch_size=args.batch_size,
            pad_token_id=pad_token_id,
            desc=f"Scoring {split}",
            show_progress=show_progress,
            stats=stats,
        )
        for members, group_results in zip(by_prompt.values(), results):
            for i, (logps, preds) in zip(members, group_results):
                scored[i] = TokenScores(logps, preds)
        if timing is not None:
            timing[f"forward_{split}"] = time.perf_counter() - tic
    return scored


def generate_plan(
    model: torch.nn.Module,
    tokenizer: Any,
    plan: EvalPlan,
    args: TofuEvalArguments,
    timing: dict[str, float] | None = None,
    show_progress: bool = True,
) -> dict[int, str]:
    """Greedy answers to every prompt of the splits that report ROUGE, each question once (prompt index -> text)."""
    generations: dict[int, str] = {}
    if not args.compute_rouge:
        return generations
    for split, split_items in plan.items.items():
        if not _SPLIT_KINDS[split].generated:
            continue
        tic = time.perf_counter()
        ids = sorted({item.prompt for item in split_items} - set(generations))
        prompts = [
            {"input_ids": plan.prompts[i].input_ids, "attention_mask": plan.prompts[i].attention_mask} for i in ids
        ]
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
            desc=f"Generating {split}",
            show_progress=show_progress,
        )
        generations.update(zip(ids, texts))
        if timing is not None:
            timing[f"generate_{split}"] = time.perf_counter() - tic
    return generations


# ------------------------------------------------------------------------------------------------ metrics


def _avg_nll(scores: TokenScores) -> float:
    return float(-np.sum(scores.logps, dtype=np.float64) / scores.logps.size)


def item_values(
    plan: EvalPlan, scored: list[TokenScores], generations: dict[int, str], tokenizer: Any, args: TofuEvalArguments
) -> dict[str, list[dict[str, Any]]]:
    """Per-item values of every split: the numbers every aggregate is computed from."""
    items: dict[str, list[dict[str, Any]]] = {}
    reference = args.label_convention == "reference"
    for split, split_items in plan.items.items():
        kind = _SPLIT_KINDS[split]
        values = []
        for index, (row, item) in enumerate(zip(plan.rows[split], split_items)):
            answer = scored[item.answer]
            avg_nll = _avg_nll(answer)
            out: dict[str, Any] = {
                "index": index,
                "question": row["question"],
                "answer": row["answer"],
                "avg_nll": avg_nll,
                "prob": M.qa_probability(avg_nll),
            }
            if split in ("forget", "holdout"):
                answer_ids = np.asarray(plan.sequences[item.answer].answer_ids)
                # The last target (the end-of-turn token, or the appended eos under the reference convention) is
                # excluded from ES, EM and min-k, as in the reference.
                body_logps, body_preds, body_ids = answer.logps[:-1], answer.preds[:-1], answer_ids[:-1]
                if body_ids.size == 0:
                    raise ValueError(f"{split} item {index}: the answer has no token besides the end-of-turn token.")
                # ZLIB's text: the reference compresses the decoded targets; ours the decoded prompt + answer.
                shown = list(answer_ids) if reference else plan.prompts[item.prompt].input_ids + list(answer_ids)
                text = tokenizer.decode(shown, skip_special_tokens=True)
                out.update(
                    {
                        "extraction_strength": M.extraction_strength(
                            body_preds, body_ids, reference_floor=args.es_reference_floor
                        ),
                        "exact_memorization": M.exact_memorization(body_preds, body_ids),
                        "mia_min_k": M.min_k_score(body_logps, k=args.min_k),
                        "mia_loss": M.loss_score(avg_nll),
                        "mia_zlib": M.zlib_score(avg_nll, text),
                    }
                )
            if kind.aggregation:
                correct_nll = _avg_nll(scored[item.correct])
                wrong_nlls = [_avg_nll(scored[w]) for w in item.wrong]
                out.update(
                    {
                        "correct_avg_nll": correct_nll,
                        "wrong_avg_nlls": wrong_nlls,
                        "correct_prob": M.qa_probability(correct_nll),
                        "wrong_prob": M.qa_probability(wrong_nlls),
                        "truth_ratio": M.truth_ratio(correct_nll, wrong_nlls),
                        "normalized_prob": M.normalized_probability(correct_nll, wrong_nlls),
                    }
                )
            if args.compute_rouge and kind.generated:
                generation = generations[item.prompt]
                out.update({"generation": generation, **M.rouge_recall(generation, row["answer"])})
            values.append(out)
        items[split] = values
    return items


def _mean(values: list[float]) -> float:
    return float(np.mean(np.asarray(values, dtype=np.float64)))


def aggregate(
    items: dict[str, list[dict[str, Any]]], retain_ref: RetainReference | None, args: TofuEvalArguments
) -> tuple[dict[str, Any], list[str]]:
    """Split-level metrics under open-unlearning's names, and notices for everything that used a default."""
    notices: list[str] = []
    forget = items["forget"]

    def rouge(split: str) -> float | None:
        return _mean([v["rougeL_recall"] for v in items[split]]) if args.compute_rouge else None

    summary: dict[str, Any] = {
        "forget_Q_A_Prob": _mean([v["prob"] for v in forget]),
        "forget_Q_A_ROUGE": rouge("forget"),
        "forget_truth_ratio": M.aggregate_truth_ratio([v["truth_ratio"] for v in forget], "closer_to_1"),
        "forget_Q_A_PARA_Prob": _mean([v["correct_prob"] for v in forget]),
        "forget_Q_A_PERT_Prob": _mean([v["wrong_prob"] for v in forget]),
    }
    if retain_ref is not None and retain_ref.truth_ratios:
        summary["forget_quality"] = M.forget_quality([v["truth_ratio"] for v in forget], retain_ref.truth_ratios)
        summary["forget_quality_reference"] = retain_ref.source
    else:
        summary["forget_quality"] = None
        notices.append(
            "forget_quality is None: it needs the retain model's per-item truth ratios (retain_logs / "
            "--retain-results)."
        )
    components = {
        "retain_Q_A_Prob": _mean([v["prob"] for v in items["retain"]]),
        "retain_Q_A_ROUGE": rouge("retain"),
        "retain_Truth_Ratio": M.aggregate_truth_ratio([v["truth_ratio"] for v in items["retain"]], "true_better"),
    }
    for split in ("real_authors", "world_facts"):
        prefix = _UTILITY_PREFIX[split]
        components[f"{prefix}_Q_A_Prob_normalised"] = _mean([v["normalized_prob"] for v in items[split]])
        components[f"{prefix}_Q_A_ROUGE"] = rouge(split)
        components[f"{prefix}_Truth_Ratio"] = M.aggregate_truth_ratio(
            [v["truth_ratio"] for v in items[split]], "true_better"
        )
    summary["model_utility"] = M.harmonic_mean(list(components.values())) if args.compute_rouge else None
    summary[TEACHER_FORCED_UTILITY] = M.harmonic_mean(
        [value for name, value in components.items() if not name.endswith("_ROUGE")]
    )
    if not args.compute_rouge:
        notices.append("model_utility and ROUGE are None: generation was skipped (compute_rouge=False).")
    summary.update(components)
    summary["extraction_strength"] = _mean([v["extraction_strength"] for v in forget])
    summary["exact_memorization"] = _mean([v["exact_memorization"] for v in forget])
    for attack in args.settings()["mia_attacks"]:
        summary[f"mia_{attack}"] = M.mia_auc(
            [v[f"mia_{attack}"] for v in forget], [v[f"mia_{attack}"] for v in items["holdout"]]
        )
    if retain_ref is not None and retain_ref.mia_auc is not None:
        reference_auc, source = float(retain_ref.mia_auc), retain_ref.source
    else:
        reference_auc, source = 0.5, "default 0.5 (no retain-model results)"
        notices.append("privleak uses AUC_retain = 0.5: no retain-model min-k AUC was given.")
    summary["privleak"] = M.privleak(summary["mia_min_k"], reference_auc)
    summary["privleak_reference_auc"] = reference_auc
    summary["privleak_reference"] = source
    if summary["privleak"] > 0:
        notices.append(
            f"privleak = {summary['privleak']:.1f} > 0: the forget set looks less familiar than to the "
            "retain model (over-unlearning); the scale is unbounded above."
        )
    return summary, notices


# ------------------------------------------------------------------------------------------------ the suite


def _tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)  # fast tokenizers: the whole vocabulary and merges
    return {
        "class": type(tokenizer).__name__,
        "backend_sha256": sha256_json(backend.to_str()) if backend is not None else None,
        "vocab_size": len(tokenizer),
        "chat_template": getattr(tokenizer, "chat_template", None),
        "special": {
            "eos": tokenizer.eos_token_id,
            "pad": tokenizer.pad_token_id,
            "bos": getattr(tokenizer, "bos_token_id", None),
        },
    }


def evaluate_tofu(
    model: torch.nn.Module,
    tokenizer: Any,
    args: TofuEvalArguments | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    retain_logs: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    model_name: str | None = None,
    reuse: bool = True,
    show_progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Evaluate `model` on TOFU; returns the summary (metric name -> value, plus provenance) with per-item values
    under `"items"`.

    Args:
        args: what to compute (`TofuEvalArguments`); keyword `overrides` replace its fields.
        data_dir: local folder of TOFU JSON(L) files; None loads `locuslab/TOFU` from the Hub.
        retain_logs: a retain-model evaluation (an output folder of this function / `hf-unlearn eval`, its
            summary.json, or an open-unlearning TOFU_EVAL.json). Gives forget_quality (KS test of truth ratios) and
            the AUC_retain of privleak; without it forget_quality is None and AUC_retain = 0.5 (stated in `notices`).
        output_dir: where `summary.json` and `items.json` go (atomically). Previous results there are reused only if
            model weights, data and every setting hash to the same fingerprint; otherwise recomputed (and said which).
        model_name: recorded as the model's name (default: `model.config._name_or_path`).

    Runs on every process of an initialised process group (torchrun / accelerate launch): each process takes a share
    of the batches, all get the same result, the main process writes the files.
    """
    started = time.perf_counter()
    args = dataclasses.replace(args or TofuEvalArguments(), **overrides)
    if tokenizer.pad_token_id is None:
        raise ValueError(
            "The tokenizer has no pad token: set one, or use hf_unlearn.models.ensure_pad_token(tokenizer, "
            "pad_with_eos=True) (CLI: --pad-with-eos)."
        )
    timing: dict[str, float] = {}

    def say(message: str) -> None:
        if show_progress and is_main_process():
            print(message, file=sys.stderr, flush=True)

    tic = time.perf_counter()
    retain_ref = load_retain_reference(retain_logs, args.forget_split) if retain_logs is not None else None
    rows = load_eval_rows(args, data_dir)
    timing["load_data"] = time.perf_counter() - tic

    tic = time.perf_counter()
    settings = args.settings()
    parts = {
        "model": model_sha256(model) if is_main_process() else "",
        "data": sha256_json(rows),
        "settings": sha256_json(settings),
        "tokenizer": sha256_json(_tokenizer_identity(tokenizer)),
        "retain_reference": retain_ref.sha256 if retain_ref else "none",
        "versions": sha256_json(environment_versions()),
    }
    timing["fingerprint"] = time.perf_counter() - tic
    previous = None
    if output_dir is not None and is_main_process():
        previous, why = read_matching_results(output_dir, parts)
        if not reuse and previous is not None:
            previous, why = None, "reuse disabled (they would match)"
        if previous is not None:
            say(f"Reusing the TOFU results in {output_dir}: {why} (fingerprint {sha256_json(parts)[:12]}).")
        elif why != "no previous results":
            say(f"Recomputing the TOFU results in {output_dir}: {why}.")
    # The main process hashed the weights and decided; every process returns the same result.
    previous, parts = broadcast_object((previous, parts))
    if previous is not None:
        for notice in previous["summary"].get("notices") or []:  # a reused result keeps its caveats in the log
            say(f"Note: {notice}")
        return dict(previous["summary"], reused=True, items=previous["items"])

    tic = time.perf_counter()
    plan = plan_evaluation(rows, tokenizer, args)
    timing["format"] = time.perf_counter() - tic
    was_training = model.training
    model.eval()
    try:
        forward_tokens: dict[str, int] = {}
        scored = score_plan(model, plan, args, tokenizer.pad_token_id, timing, show_progress, forward_tokens)
        generations = generate_plan(model, tokenizer, plan, args, timing, show_progress)
    finally:
        model.train(was_training)

    tic = time.perf_counter()
    items = item_values(plan, scored, generations, tokenizer, args)
    summary, notices = aggregate(items, retain_ref, args)
    formatting_notice = chat_format_notice(tokenizer, args.chat_format())
    formatting_used = _formatting_used(tokenizer, args)
    if formatting_notice:
        notices.append(formatting_notice)
    timing["metrics"] = time.perf_counter() - tic
    timing["total"] = time.perf_counter() - started
    configs = tofu_split_configs(args.forget_split)
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
                "configs": configs,
                "sha256": parts["data"],
            },
            # As applied: a system prompt the formatting did not use is not recorded (the fingerprint keeps what was
            # asked, so the cache still matches the same request).
            "settings": {**settings, "system_prompt": formatting_used["system_prompt"]},
            "formatting_used": formatting_used,
            "versions": environment_versions(),
            "world_size": num_processes(),
            "fingerprint": sha256_json(parts),
            "fingerprint_parts": parts,
            "timing_s": timing,
            "forward_tokens": forward_tokens,
            "reused": False,
        }
    )
    if output_dir is not None and is_main_process():
        write_results(output_dir, summary, items)
    wait_for_everyone()  # the files exist on return, on every process
    for notice in notices:
        say(f"Note: {notice}")
    return dict(summary, items=items)


def _formatting_used(tokenizer: Any, args: TofuEvalArguments) -> dict[str, Any]:
    """The formatting actually applied (a tokenizer without a chat template uses no system prompt and no template)."""
    chat_template = args.use_chat_template is not False and bool(getattr(tokenizer, "chat_template", None))
    return {
        "chat_template": chat_template,
        "system_prompt": args.system_prompt if chat_template else None,
        "reference_attention_mask": args.reference_attention_mask,
        "label_convention": args.label_convention,
    }
