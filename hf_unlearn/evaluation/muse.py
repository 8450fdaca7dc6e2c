"""The MUSE evaluation (Shi et al., *MUSE: Machine Unlearning Six-Way Evaluation for Language Models*,
arXiv 2407.06460) as plain functions over a model, a tokenizer and the benchmark's rows, on the same batched,
process-sharded runner as the TOFU suite (`runner.generate_answers`, `runner.score_sequences`).

- **VerbMem** (`verbmem_f`): the greedy continuation of each forget-article prompt (`verbmem_max_new_tokens` = 128
  new tokens) against the true continuation cut to its first 128 tokens (tokenized with the special tokens, as the
  reference does, then decoded without them); mean ROUGE-L F1 × 100.
- **KnowMem** (`knowmem_f`, `knowmem_r`): each question after the in-context pairs (`"Question: q\\nAnswer: a\\n\\n"`
  each, then `"Question: q\\nAnswer: "`), a greedy answer of at most 32 new tokens cut before the first `"\\n\\n"`,
  `"\\nQuestion"` or `"Question:"`; mean ROUGE-L F1 × 100 against the true answer (forget QA: knowledge left;
  retain QA: utility).
- **PrivLeak** (`privleak`): the Min-K % score (k = 0.4) of every privleak text (log-probs of all its tokens after
  the first) on the forget and holdout sets, AUC = P(score_holdout > score_forget) (`mia_auc`), and
  (AUC_retrained − AUC)/(1 − AUC_retrained) × 100 (`privleak`): ≈ −100 when the forget articles are still told apart
  from unseen ones, 0 when the model looks like the retrained one. The reference writes the same number with the
  labels swapped, (AUC' − AUC'_retrained)/AUC'_retrained with AUC' = 1 − AUC.

ROUGE is `rouge_score`'s ROUGE-L F-measure without stemming (the reference's setting; the TOFU metrics stem).
Per-item values and generations are returned with the aggregates, so they can be recomputed.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .kernels import prepacked_linears
from .metrics import mia_auc, min_k_score, privleak

__all__ = [
    "KNOWMEM_STOP_STRINGS",
    "MUSE_METRICS",
    "MuseEvalArguments",
    "evaluate_muse",
    "knowmem_answer",
    "knowmem_prompt",
    "rouge_l_f1",
    "text_token_logprobs",
    "verbmem_reference",
]

MUSE_METRICS = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak")
# The reference cuts a KnowMem answer before the first of these (the model goes on with the next question).
KNOWMEM_STOP_STRINGS = ("\n\n", "\nQuestion", "Question:")


@dataclass
class MuseEvalArguments:
    """What the MUSE evaluation computes and how (the defaults are the reference's).

    Parameters:
        metrics: which of `verbmem_f`, `knowmem_f`, `knowmem_r`, `privleak` to compute (none: only lm-eval tasks).
        verbmem_max_new_tokens: new tokens of a VerbMem continuation, and the true continuation's cut (128).
        knowmem_max_new_tokens: new tokens of a KnowMem answer (32).
        min_k: the share k of a text's least likely tokens in the Min-K % score (0.4).
        privleak_max_length: privleak texts are scored on their first this many tokens (null: whole).
        max_verbmem_items / max_knowmem_items / max_privleak_items: the first N items of each split (null: all).
        batch_size / generation_batch_size: texts per scoring pass / prompts generated together.
        generation_schedule: as `generate_answers` (`refill`, `generate`, `static_compile`, `vllm`).
        onednn_linears: on a CPU, float32 linear layers run oneDNN on weights reordered once (`prepacked_linears`).
    """

    metrics: list[str] = field(default_factory=lambda: list(MUSE_METRICS), metadata={"help": "Metrics to compute."})
    verbmem_max_new_tokens: int = field(default=128, metadata={"help": "VerbMem continuation length (tokens)."})
    knowmem_max_new_tokens: int = field(default=32, metadata={"help": "KnowMem answer length (tokens)."})
    min_k: float = field(default=0.4, metadata={"help": "k of the Min-K % score of PrivLeak."})
    privleak_max_length: int | None = field(default=2048, metadata={"help": "Tokens scored per privleak text."})
    max_verbmem_items: int | None = field(default=None, metadata={"help": "First N VerbMem prompts (null: all)."})
    max_knowmem_items: int | None = field(default=None, metadata={"help": "First N questions per QA set."})
    max_privleak_items: int | None = field(default=None, metadata={"help": "First N texts per privleak set."})
    batch_size: int = field(default=8, metadata={"help": "Texts per scoring forward pass."})
    generation_batch_size: int = field(default=8, metadata={"help": "Prompts generated together."})
    generation_schedule: str = field(default="refill", metadata={"help": "refill, generate, static_compile, vllm."})
    onednn_linears: bool = field(default=True, metadata={"help": "CPU float32: oneDNN linears on reordered weights."})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(MUSE_METRICS))
        if unknown:
            raise ValueError(f"metrics must be a subset of {list(MUSE_METRICS)}, got {self.metrics}.")
        if not 0 < self.min_k <= 1:
            raise ValueError(f"min_k must be in (0, 1], got {self.min_k}.")
        for name in ("verbmem_max_new_tokens", "knowmem_max_new_tokens", "batch_size", "generation_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("privleak_max_length", "max_verbmem_items", "max_knowmem_items", "max_privleak_items"):
            value = getattr(self, name)
            if value is not None and value < (2 if name == "privleak_max_length" else 1):
                raise ValueError(f"{name} must be positive or null, got {value}.")

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SCORER = None


def rouge_l_f1(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure of `prediction` against `reference` (`rouge_score`, no stemming, as the MUSE reference)."""
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return float(_SCORER.score(reference, prediction)["rougeL"].fmeasure)


def verbmem_reference(tokenizer: Any, continuation: str, max_tokens: int = 128) -> str:
    """The true continuation as VerbMem scores it: its first `max_tokens` tokens (special tokens included in the
    count, as the reference tokenizes it), decoded without special tokens."""
    ids = list(tokenizer(continuation, add_special_tokens=True)["input_ids"])[:max_tokens]
    return tokenizer.decode(ids, skip_special_tokens=True)


def knowmem_prompt(icl: Sequence[dict[str, str]], question: str) -> str:
    """The in-context pairs, then the question: `"Question: q\\nAnswer: a\\n\\n"` per pair, `"Question: q\\nAnswer: "`."""
    shots = "".join(f"Question: {pair['question']}\nAnswer: {pair['answer']}\n\n" for pair in icl)
    return shots + f"Question: {question}\nAnswer: "


def knowmem_answer(generation: str) -> str:
    """A KnowMem generation cut before the first `KNOWMEM_STOP_STRINGS` (the rest answers questions nobody asked)."""
    for stop in KNOWMEM_STOP_STRINGS:
        generation = generation.split(stop)[0]
    return generation


def _encode(tokenizer: Any, text: str, max_length: int | None = None) -> dict[str, list[int]]:
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    ids = ids[:max_length] if max_length is not None else ids
    return {"input_ids": ids, "attention_mask": [1] * len(ids)}


def text_token_logprobs(
    model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int, max_length: int | None = None, **kwargs: Any
) -> list[np.ndarray]:
    """log p(x_t | x_<t) of every token of each text after its first (the text tokenized with the special tokens,
    cut to `max_length`), through `score_sequences`."""
    from .runner import score_sequences

    sequences = []
    for text in texts:
        row = _encode(tokenizer, text, max_length)
        if len(row["input_ids"]) < 2:
            raise ValueError("A privleak text has fewer than two tokens: nothing to score.")
        sequences.append({**row, "num_answer_tokens": len(row["input_ids"]) - 1})
    scored = score_sequences(model, sequences, batch_size=batch_size, pad_token_id=_pad_id(tokenizer), **kwargs)
    return [logps for logps, _ in scored]


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("The tokenizer has neither a pad nor an eos token to pad batches with.")
    return int(pad)


def _first(rows: Sequence[Any], limit: int | None) -> list[Any]:
    return list(rows)[: limit if limit is not None else len(rows)]


def _generate(model, tokenizer, prompts: list[str], max_new_tokens: int, args: MuseEvalArguments, desc: str, show):
    from .runner import generate_answers

    return generate_answers(
        model,
        tokenizer,
        [_encode(tokenizer, prompt) for prompt in prompts],
        batch_size=args.generation_batch_size,
        max_new_tokens=max_new_tokens,
        stop_token_ids=[tokenizer.eos_token_id],
        pad_token_id=_pad_id(tokenizer),
        schedule=args.generation_schedule,
        desc=desc,
        show_progress=show,
    )


def evaluate_muse(
    model: Any,
    tokenizer: Any,
    data: dict[str, Sequence[Any]],
    args: MuseEvalArguments | None = None,
    *,
    reference_auc: float | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """The MUSE metrics of `model` (see the module docstring).

    Args:
        data: `verbmem` (rows with `prompt`, `gt`), `knowmem_forget` / `knowmem_retain` and their in-context pairs
            `knowmem_forget_icl` / `knowmem_retain_icl` (rows with `question`, `answer`), `privleak_forget` /
            `privleak_holdout` (texts); only what `args.metrics` needs.
        reference_auc: the retrained model's Min-K AUC (`privleak_auc` of its evaluation); None: 0.5, and the
            summary says so.

    Returns `{"summary": {metric: value, ...}, "items": {split: [per-item values and generations]}}`.
    """
    args = args or MuseEvalArguments()
    was_training = model.training
    model.eval()
    summary: dict[str, Any] = {}
    items: dict[str, list[dict[str, Any]]] = {}
    kernels = contextlib.ExitStack()
    try:
        kernels.enter_context(prepacked_linears(model, args.onednn_linears))
        if "verbmem_f" in args.metrics:
            rows = _first(data["verbmem"], args.max_verbmem_items)
            outputs = _generate(
                model, tokenizer, [r["prompt"] for r in rows], args.verbmem_max_new_tokens, args, "VerbMem",
                show_progress,
            )  # fmt: skip
            items["verbmem"] = []
            for row, output in zip(rows, outputs):
                truth = verbmem_reference(tokenizer, row["gt"], args.verbmem_max_new_tokens)
                items["verbmem"].append({"generation": output, "rougeL_f1": rouge_l_f1(output, truth)})
            summary["verbmem_f"] = 100 * float(np.mean([item["rougeL_f1"] for item in items["verbmem"]]))
        for metric, split in (("knowmem_f", "forget"), ("knowmem_r", "retain")):
            if metric not in args.metrics:
                continue
            rows = _first(data[f"knowmem_{split}"], args.max_knowmem_items)
            icl = list(data[f"knowmem_{split}_icl"])
            prompts = [knowmem_prompt(icl, row["question"]) for row in rows]
            outputs = _generate(
                model, tokenizer, prompts, args.knowmem_max_new_tokens, args, f"KnowMem {split}", show_progress
            )
            items[f"knowmem_{split}"] = [
                {"generation": knowmem_answer(output), "rougeL_f1": rouge_l_f1(knowmem_answer(output), row["answer"])}
                for row, output in zip(rows, outputs)
            ]
            summary[metric] = 100 * float(np.mean([item["rougeL_f1"] for item in items[f"knowmem_{split}"]]))
        if "privleak" in args.metrics:
            scores = {}
            for split in ("forget", "holdout"):
                texts = _first(data[f"privleak_{split}"], args.max_privleak_items)
                logps = text_token_logprobs(
                    model,
                    tokenizer,
                    texts,
                    batch_size=args.batch_size,
                    max_length=args.privleak_max_length,
                    desc=f"PrivLeak {split}",
                    show_progress=show_progress,
                )
                scores[split] = [min_k_score(values, args.min_k) for values in logps]
                items[f"privleak_{split}"] = [{"min_k": score} for score in scores[split]]
            auc = mia_auc(scores["forget"], scores["holdout"])
            summary.update(
                privleak=privleak(auc, 0.5 if reference_auc is None else reference_auc),
                privleak_auc=auc,
                privleak_reference_auc=reference_auc,
            )
            if reference_auc is None:
                summary["notices"] = ["privleak against AUC 0.5 (no retrained model's AUC given)"]
    finally:
        kernels.close()
        model.train(was_training)
    summary["num_items"] = {split: len(values) for split, values in items.items()}
    return {"summary": summary, "items": items}
