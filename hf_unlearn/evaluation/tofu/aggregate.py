"""From model passes to numbers: `item_values` (per item, kept so that every aggregate can be recomputed) and
`aggregate` (the split-level metrics under open-unlearning's names, `hf_unlearn.evaluation.metrics` composed
explicitly: forget quality, model utility and its nine components, privleak, ...)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import metrics as M
from .data import SPLIT_KINDS
from .plan import EvalPlan, TokenScores

if TYPE_CHECKING:
    from .arguments import TofuEvalArguments
    from .retain import RetainReference

# The ROUGE package (and NLTK under it) takes about a second to import: it is imported with this module, as the
# reference's evaluator imports it with its metrics, rather than inside the first evaluation (`M.rouge_recall` still
# imports it itself where this failed).
with contextlib.suppress(ImportError):
    import rouge_score.rouge_scorer  # noqa: F401

__all__ = ["MAIN_METRICS", "TEACHER_FORCED_UTILITY", "UTILITY_COMPONENTS", "aggregate", "item_values"]

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
_UTILITY_PREFIX = {"retain": "retain", "real_authors": "ra", "world_facts": "wf"}


def _avg_nll(scores: TokenScores) -> float:
    return float(-np.sum(scores.logps, dtype=np.float64) / scores.logps.size)


def item_values(
    plan: EvalPlan, scored: list[TokenScores], generations: dict[int, str], tokenizer: Any, args: TofuEvalArguments
) -> dict[str, list[dict[str, Any]]]:
    """Per-item values of every split: the numbers every aggregate is computed from."""
    items: dict[str, list[dict[str, Any]]] = {}
    reference = args.label_convention == "reference"
    for split, split_items in plan.items.items():
        kind = SPLIT_KINDS[split]
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
                        "mia_min_k": M.min_k_score(
                            body_logps if item.min_k_answer is None else scored[item.min_k_answer].logps[:-1],
                            k=args.min_k,
                        ),
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
