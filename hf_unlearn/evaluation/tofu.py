"""`evaluate_tofu`: the full TOFU suite (SPEC §3) from one teacher-forced forward per (prompt, answer) pair.

The metrics are the plain functions of `metrics.py`, composed here explicitly. Per split:

| split (config)                     | metrics                                                                    |
|------------------------------------|----------------------------------------------------------------------------|
| forget (`forgetXX_perturbed`)      | Q_A_Prob, ROUGE, truth ratio (paraphrased vs perturbed), ES, EM, MIAs      |
| holdout (`holdoutXX`)              | MIAs (the non-member side of the AUC)                                      |
| retain (`retain_perturbed`)        | Q_A_Prob, ROUGE, truth ratio (paraphrased vs perturbed)  -> model utility  |
| real_authors / world_facts (`*_perturbed`) | normalised prob, ROUGE, truth ratio (answer vs perturbed) -> model utility |

>>> summary = evaluate_tofu(model, tokenizer, forget_split="forget05", data_dir="tofu/", output_dir="eval/")  # doctest: +SKIP
>>> summary["forget_quality"], summary["model_utility"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.tofu import DEFAULT_SYSTEM_PROMPT, encode_prompt_answer, end_of_turn_token_id, load_tofu, reference_mask
from ..utils import package_version
from . import metrics as M
from .results import (
    RetainReference, data_fingerprint, load_retain_reference, model_fingerprint, read_matching_results, sha256_json,
    write_results,
)  # fmt: skip
from .runner import dist_info, generate_answers, score_prompt_groups

__all__ = ["FORGET_SPLITS", "MIA_ATTACKS", "evaluate_tofu", "tofu_split_configs"]

FORGET_SPLITS = ("forget01", "forget05", "forget10")
MIA_ATTACKS = ("min_k", "loss", "zlib")
# split -> (correct answer for the truth ratio, generate for ROUGE, truth-ratio aggregation)
_SPLITS = {
    "forget": ("paraphrased_answer", True, "closer_to_1"),
    "holdout": (None, False, None),
    "retain": ("paraphrased_answer", True, "true_better"),
    "real_authors": ("answer", True, "true_better"),
    "world_facts": ("answer", True, "true_better"),
}
_UTILITY = {"retain": "retain", "real_authors": "ra", "world_facts": "wf"}


def tofu_split_configs(forget_split: str) -> dict[str, str]:
    """The TOFU config evaluated for each split, e.g. forget05 -> forget05_perturbed, holdout05, retain_perturbed..."""
    if forget_split not in FORGET_SPLITS:
        raise ValueError(f"Unknown forget split {forget_split!r}; use one of {', '.join(FORGET_SPLITS)}.")
    percent = forget_split[len("forget") :]
    return {"forget": f"{forget_split}_perturbed", "holdout": f"holdout{percent}", "retain": "retain_perturbed",
            "real_authors": "real_authors_perturbed", "world_facts": "world_facts_perturbed"}  # fmt: skip


def _validate_rows(rows: list[dict[str, Any]], split: str, config: str) -> None:
    if not rows:
        raise ValueError(f"The {split} split ({config}) is empty.")
    correct, _, aggregation = _SPLITS[split]
    required = ["question", "answer"] + ([correct, "perturbed_answer"] if aggregation else [])
    missing = [column for column in dict.fromkeys(required) if column not in rows[0]]
    if missing:
        raise ValueError(f"The {split} split ({config}) lacks column(s) {missing}; it has {sorted(rows[0])}.")
    for index, row in enumerate(rows):
        for column in dict.fromkeys(required):
            value = row.get(column)
            if column == "perturbed_answer":
                if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
                    raise ValueError(f"{config} row {index}: perturbed_answer must be a non-empty list of strings.")
            elif not isinstance(value, str) or not value.strip():
                raise ValueError(f"{config} row {index}: {column!r} must be a non-empty string.")


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(np.asarray(values, dtype=np.float64)))


def evaluate_tofu(
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    forget_split: str = "forget05",
    data_dir: str | os.PathLike | None = None,
    retain_logs: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    batch_size: int = 16,
    generation_batch_size: int | None = None,
    max_new_tokens: int = 200,
    max_items: int | None = None,
    split_max_items: dict[str, int] | None = None,
    compute_rouge: bool = True,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    template_kwargs: dict[str, Any] | None = None,
    use_chat_template: bool | None = None,
    reference_attention_mask: bool = False,
    share_prompts: bool = True,
    es_reference_floor: bool = True,
    min_k: float = 0.4,
    mia_attacks: Sequence[str] = MIA_ATTACKS,
    model_name: str | None = None,
    reuse: bool = True,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Evaluate `model` on TOFU; returns the summary (metric name -> value, plus provenance) with per-item values
    under `"items"`.

    Args:
        forget_split: `forget01`, `forget05` or `forget10` (holdout and retain model follow: holdout05, retain95).
        data_dir: local folder of TOFU JSON(L) files; None loads `locuslab/TOFU` from the Hub.
        retain_logs: a retain-model evaluation (an output folder of this function / `hf-unlearn eval`, its
            summary.json, or an open-unlearning TOFU_EVAL.json). Gives forget_quality (KS test of truth ratios) and
            the AUC_retain of privleak; without it forget_quality is None and AUC_retain = 0.5 (stated in `notices`).
        output_dir: where `summary.json` and `items.json` go (atomically). Previous results there are reused only if
            model weights, data and every setting hash to the same fingerprint; otherwise recomputed (and said which).
        batch_size / generation_batch_size: sequences per forward / prompts per `generate` call.
        max_new_tokens: greedy generation budget for ROUGE (reference: 200).
        max_items: evaluate only the first N items of every split (quick looks; not comparable with full runs).
        split_max_items: per-split limits that override `max_items` for the splits named (`forget`, `holdout`,
            `retain`, `real_authors`, `world_facts`), e.g. `{"retain": 50, "real_authors": 50, "world_facts": 50}`:
            all forget/holdout items (forget_quality, privleak) with model utility on documented subsets.
        compute_rouge: False skips generation: ROUGE metrics and model_utility are None.
        system_prompt, template_kwargs, use_chat_template, reference_attention_mask: formatting, as in
            `hf_unlearn.data.format_qa` (defaults: SPEC §3).
        share_prompts: score all answers to one question in one packed row, computing the prompt once (same
            numbers up to float rounding; needs eager/SDPA attention, else one sequence per answer).
        es_reference_floor: extraction strength's reference quirk (ES = 1/n when no suffix matches); False: 0.
        min_k: fraction k of the Min-K% attack (MUSE: 0.4).
        mia_attacks: attacks whose AUC is reported as `mia_<name>`; `min_k` is always computed (privleak uses it).
        model_name: recorded as the model's name (default: `model.config._name_or_path`).

    Runs on every process of an initialised `torch.distributed` group (torchrun / accelerate launch): each process
    takes a share of the batches, all get the same result, rank 0 writes the files.
    """
    started = time.perf_counter()
    rank, world = dist_info()
    configs = tofu_split_configs(forget_split)
    unknown = sorted(set(mia_attacks) - set(MIA_ATTACKS))
    if unknown:
        raise ValueError(f"Unknown MIA attack(s) {unknown}; use {list(MIA_ATTACKS)}.")
    if max_items is not None and max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}.")
    split_max_items = dict(split_max_items or {})
    if set(split_max_items) - set(configs) or any(not isinstance(n, int) or n < 1 for n in split_max_items.values()):
        raise ValueError(f"split_max_items must map splits {sorted(configs)} to integers >= 1, got {split_max_items}.")
    if tokenizer.pad_token_id is None:
        raise ValueError("The tokenizer has no pad token: set one, or use hf_unlearn.models.ensure_pad_token(tokenizer, "
                         "pad_with_eos=True) (CLI: --pad-with-eos).")  # fmt: skip
    timing: dict[str, float] = {}
    say = (lambda message: print(message, file=sys.stderr, flush=True)) if show_progress and rank == 0 else (lambda _: None)

    # ---- data and provenance
    tic = time.perf_counter()
    retain_ref = load_retain_reference(retain_logs, forget_split) if retain_logs is not None else None
    rows = {split: load_tofu(config, data_dir).to_list() for split, config in configs.items()}
    for split, split_rows in rows.items():
        _validate_rows(split_rows, split, configs[split])
        limit = split_max_items.get(split, max_items)
        rows[split] = split_rows[:limit] if limit else split_rows
    format_kwargs = {"system_prompt": system_prompt, "template_kwargs": template_kwargs, "use_chat_template": use_chat_template}
    settings = {
        "forget_split": forget_split, "configs": configs, "data_dir": None if data_dir is None else str(data_dir),
        "batch_size": batch_size, "generation_batch_size": generation_batch_size or batch_size,
        "max_new_tokens": max_new_tokens, "max_items": max_items, "compute_rouge": compute_rouge,
        **format_kwargs, "reference_attention_mask": reference_attention_mask,
        "share_prompts": share_prompts, "es_reference_floor": es_reference_floor,
        "min_k": min_k, "mia_attacks": sorted(set(mia_attacks) | {"min_k"}),
    }  # fmt: skip
    if split_max_items:  # only when used, so the fingerprints of earlier results stay valid
        settings["split_max_items"] = dict(sorted(split_max_items.items()))
    versions = {p: package_version(p) for p in ("hf-unlearn", "torch", "transformers", "rouge-score", "scipy", "scikit-learn")}
    model_info = {"name_or_path": model_name or getattr(getattr(model, "config", None), "_name_or_path", None),
                  "class": type(model).__name__, "dtype": str(next(model.parameters()).dtype),
                  "num_parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip
    timing["load_data"] = time.perf_counter() - tic

    tic = time.perf_counter()
    parts = {"model": model_fingerprint(model) if rank == 0 else "", "data": data_fingerprint(rows),
             "settings": sha256_json(settings), "tokenizer": sha256_json(_tokenizer_identity(tokenizer)),
             "retain_reference": retain_ref.sha256 if retain_ref else "none", "versions": sha256_json(versions)}  # fmt: skip
    fingerprint = sha256_json(parts)
    timing["fingerprint"] = time.perf_counter() - tic
    previous = None
    if output_dir is not None and rank == 0:
        previous, why = read_matching_results(output_dir, parts)
        if not reuse and previous is not None:
            previous, why = None, "reuse disabled (they would match)"
        if previous is not None:
            say(f"Reusing the TOFU results in {output_dir}: {why} (fingerprint {fingerprint[:12]}).")
        elif why != "no previous results":
            say(f"Recomputing the TOFU results in {output_dir}: {why}.")
    if world > 1:  # rank 0 hashed the weights and decided; every rank returns the same result
        box = [previous, parts]
        torch.distributed.broadcast_object_list(box, src=0)
        previous, parts = box
        fingerprint = sha256_json(parts)
    if previous is not None:
        return dict(previous["summary"], reused=True, items=previous["items"])

    # ---- formatting: one sequence per distinct (question, answer) pair, one prompt per question
    tic = time.perf_counter()
    sequences: list[dict[str, Any]] = []
    seq_index: dict[tuple[str, str], int] = {}
    prompts: list[dict[str, Any]] = []
    prompt_index: dict[str, int] = {}
    plan: dict[str, list[dict[str, Any]]] = {}

    def add(question: str, answer: str) -> int:
        key = (question, answer)
        if key not in seq_index:
            prompt_ids, answer_ids = encode_prompt_answer(tokenizer, question, answer, **format_kwargs)
            input_ids = prompt_ids + answer_ids
            mask = reference_mask(tokenizer, input_ids) if reference_attention_mask else [1] * len(input_ids)
            if question not in prompt_index:
                prompt_index[question] = len(prompts)
                prompts.append({"input_ids": prompt_ids, "attention_mask": mask[: len(prompt_ids)]})
            seq_index[key] = len(sequences)
            sequences.append({"input_ids": input_ids, "prompt": prompt_index[question], "answer_ids": answer_ids,
                              "answer_mask": mask[len(prompt_ids) :]})  # fmt: skip
        return seq_index[key]

    for split, split_rows in rows.items():
        correct, _, aggregation = _SPLITS[split]
        plan[split] = [
            {"answer": add(row["question"], row["answer"]),
             "correct": add(row["question"], row[correct]) if aggregation else None,
             "wrong": [add(row["question"], wrong) for wrong in row["perturbed_answer"]] if aggregation else [],
             "prompt": prompt_index[row["question"]]}
            for row in split_rows
        ]  # fmt: skip
    stop_ids = {tokenizer.eos_token_id, end_of_turn_token_id(tokenizer, **format_kwargs)}
    timing["format"] = time.perf_counter() - tic

    # ---- model passes: teacher-forced scoring, then greedy generation (per split, for timing)
    was_training = model.training
    model.eval()
    scored: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(sequences)
    generations: dict[int, str] = {}
    try:
        for split in rows:
            tic = time.perf_counter()
            ids = sorted({i for item in plan[split] for i in [item["answer"], item["correct"], *item["wrong"]]
                          if i is not None and scored[i] is None})  # fmt: skip
            by_prompt: dict[int, list[int]] = {}
            for i in ids:  # one group per prompt: its answers are scored with the prompt computed once
                by_prompt.setdefault(sequences[i]["prompt"] if share_prompts else -1 - i, []).append(i)
            groups = [{"prompt_ids": prompts[sequences[members[0]]["prompt"]]["input_ids"],
                       "prompt_mask": prompts[sequences[members[0]]["prompt"]]["attention_mask"],
                       "answers": [sequences[i]["answer_ids"] for i in members],
                       "answer_masks": [sequences[i]["answer_mask"] for i in members]} for members in by_prompt.values()]  # fmt: skip
            results = score_prompt_groups(model, groups, batch_size=batch_size, pad_token_id=tokenizer.pad_token_id,
                                          desc=f"Scoring {split}", show_progress=show_progress)  # fmt: skip
            for members, group_results in zip(by_prompt.values(), results):
                for i, result in zip(members, group_results):
                    scored[i] = result
            timing[f"forward_{split}"] = time.perf_counter() - tic
        for split in rows:
            if not (compute_rouge and _SPLITS[split][1]):
                continue
            tic = time.perf_counter()
            ids = sorted({item["prompt"] for item in plan[split]} - set(generations))
            texts = generate_answers(model, tokenizer, [prompts[i] for i in ids],
                                     batch_size=generation_batch_size or batch_size, max_new_tokens=max_new_tokens,
                                     stop_token_ids=stop_ids, pad_token_id=tokenizer.pad_token_id,
                                     desc=f"Generating {split}", show_progress=show_progress)  # fmt: skip
            generations.update(zip(ids, texts))
            timing[f"generate_{split}"] = time.perf_counter() - tic
    finally:
        model.train(was_training)

    # ---- metrics
    tic = time.perf_counter()
    items = {split: _item_values(split, rows[split], plan[split], sequences, scored, generations, tokenizer,
                                 compute_rouge, es_reference_floor, min_k) for split in rows}  # fmt: skip
    summary, notices = _aggregate(items, retain_ref, compute_rouge, settings["mia_attacks"])
    timing["metrics"] = time.perf_counter() - tic
    timing["total"] = time.perf_counter() - started
    summary.update({
        "notices": notices, "num_items": {split: len(values) for split, values in items.items()},
        "model": model_info, "data": {"source": "hub:locuslab/TOFU" if data_dir is None else str(Path(data_dir).resolve()),
                                      "configs": configs, "sha256": parts["data"]},
        "settings": settings, "versions": versions, "world_size": world,
        "fingerprint": fingerprint, "fingerprint_parts": parts, "timing_s": timing, "reused": False,
    })  # fmt: skip
    if output_dir is not None and rank == 0:
        write_results(output_dir, summary, items)
    if world > 1:
        torch.distributed.barrier()  # the files exist on return, on every rank
    for notice in notices:
        say(f"Note: {notice}")
    return dict(summary, items=items)


def _tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)  # fast tokenizers: the whole vocabulary and merges
    return {
        "class": type(tokenizer).__name__,
        "backend_sha256": sha256_json(backend.to_str()) if backend is not None else None,
        "vocab_size": len(tokenizer),
        "chat_template": getattr(tokenizer, "chat_template", None),
        "special": {"eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id, "bos": getattr(tokenizer, "bos_token_id", None)},
    }


def _item_values(split, rows, plan, sequences, scored, generations, tokenizer, compute_rouge, es_floor, min_k):
    """Per-item values of one split (the numbers every aggregate is computed from)."""
    correct_key, generated, aggregation = _SPLITS[split]
    values = []
    for index, (row, item) in enumerate(zip(rows, plan)):
        logps, preds = scored[item["answer"]]
        avg_nll = float(-np.sum(logps, dtype=np.float64) / logps.size)
        answer_ids = np.asarray(sequences[item["answer"]]["input_ids"][-logps.size :])
        out: dict[str, Any] = {"index": index, "question": row["question"], "answer": row["answer"],
                               "avg_nll": avg_nll, "prob": M.qa_probability(avg_nll)}  # fmt: skip
        if split in ("forget", "holdout"):
            body_logps, body_preds, body_ids = logps[:-1], preds[:-1], answer_ids[:-1]  # end-of-turn token excluded
            if body_ids.size == 0:
                raise ValueError(f"{split} item {index}: the answer has no token besides the end-of-turn token.")
            text = tokenizer.decode(sequences[item["answer"]]["input_ids"], skip_special_tokens=True)
            out.update({
                "extraction_strength": M.extraction_strength(body_preds, body_ids, reference_floor=es_floor),
                "exact_memorization": M.exact_memorization(body_preds, body_ids),
                "mia_min_k": M.min_k_score(body_logps, k=min_k), "mia_loss": M.loss_score(avg_nll),
                "mia_zlib": M.zlib_score(avg_nll, text),
            })  # fmt: skip
        if aggregation:
            correct_logps = scored[item["correct"]][0]
            correct_nll = float(-np.sum(correct_logps, dtype=np.float64) / correct_logps.size)
            wrong_nlls = [float(-np.sum(scored[w][0], dtype=np.float64) / scored[w][0].size) for w in item["wrong"]]
            out.update({"correct_avg_nll": correct_nll, "wrong_avg_nlls": wrong_nlls,
                        "correct_prob": M.qa_probability(correct_nll), "wrong_prob": M.qa_probability(wrong_nlls),
                        "truth_ratio": M.truth_ratio(correct_nll, wrong_nlls),
                        "normalized_prob": M.normalized_probability(correct_nll, wrong_nlls)})  # fmt: skip
        if compute_rouge and generated:
            generation = generations[item["prompt"]]
            out.update({"generation": generation, **M.rouge_recall(generation, row["answer"])})
        values.append(out)
    return values


def _aggregate(items, retain_ref: RetainReference | None, compute_rouge: bool, attacks) -> tuple[dict, list[str]]:
    """Split-level metrics under open-unlearning's names, and notices for everything that used a default."""
    notices: list[str] = []
    forget = items["forget"]
    rouge = (lambda split: _mean([v["rougeL_recall"] for v in items[split]])) if compute_rouge else (lambda _: None)
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
        notices.append("forget_quality is None: it needs the retain model's per-item truth ratios (retain_logs / "
                       "--retain-results).")  # fmt: skip
    components = {
        "retain_Q_A_Prob": _mean([v["prob"] for v in items["retain"]]),
        "retain_Q_A_ROUGE": rouge("retain"),
        "retain_Truth_Ratio": M.aggregate_truth_ratio([v["truth_ratio"] for v in items["retain"]], "true_better"),
    }
    for split in ("real_authors", "world_facts"):
        prefix = _UTILITY[split]
        components[f"{prefix}_Q_A_Prob_normalised"] = _mean([v["normalized_prob"] for v in items[split]])
        components[f"{prefix}_Q_A_ROUGE"] = rouge(split)
        components[f"{prefix}_Truth_Ratio"] = M.aggregate_truth_ratio([v["truth_ratio"] for v in items[split]], "true_better")
    summary["model_utility"] = M.harmonic_mean(list(components.values())) if compute_rouge else None
    if not compute_rouge:
        notices.append("model_utility and ROUGE are None: generation was skipped (compute_rouge=False).")
    summary.update(components)
    summary["extraction_strength"] = _mean([v["extraction_strength"] for v in forget])
    summary["exact_memorization"] = _mean([v["exact_memorization"] for v in forget])
    for attack in attacks:
        summary[f"mia_{attack}"] = M.mia_auc([v[f"mia_{attack}"] for v in forget], [v[f"mia_{attack}"] for v in items["holdout"]])
    if retain_ref is not None and retain_ref.mia_auc is not None:
        reference_auc, source = float(retain_ref.mia_auc), retain_ref.source
    else:
        reference_auc, source = 0.5, "default 0.5 (no retain-model results)"
        notices.append("privleak uses AUC_retain = 0.5: no retain-model min-k AUC was given.")
    summary["privleak"] = M.privleak(summary["mia_min_k"], reference_auc)
    summary["privleak_reference_auc"] = reference_auc
    summary["privleak_reference"] = source
    if summary["privleak"] > 0:
        notices.append(f"privleak = {summary['privleak']:.1f} > 0: the forget set looks less familiar than to the "
                       "retain model (over-unlearning); the scale is unbounded above.")  # fmt: skip
    return summary, notices
