"""Does MU-Mis's premise hold on the Markov LM? The input sensitivity of seen against unseen sequences.

MU-Mis assumes that training on a sample raises its relative input sensitivity R = ‖∇_x f_c‖² − ‖∇_x f_{c'}‖² (c the
label, c' another class): a trained model should have R > 0 on its training data, and R on a forget sample should be
lower in the retrained model, which never saw it, than in the original. Unlearning minimises R on the forget set.
This script measures R on the cached Markov models of `hf-unlearn run markov` (the original, trained on retain ∪
forget-1, and the retrained, trained on retain), per answer position t of every sequence (x = the input embeddings,
c = the labelled next state, f the logit or the log-prob at t), for these groups of 250 sequences each (5 answer positions per sequence by default: the cost is one batched
backward per position and output):

- `forget1_train`: in the forget set and seen by the original (what unlearning must undo);
- `forget2_train`: in the forget set but seen by neither model (the recipe's forget set holds both chains);
- `forget1_test`, `forget2_test`: the forget chains' held-out sequences (unseen);
- `retain_train` (seen by both), `retain_test` (unseen).

Per group and model: the mean of ‖∇_x f_c‖², of ‖∇_x f_{c'}‖² for a random other output (c' uniform over the other
10 outputs, the padding id included, as `MUMisTrainer` draws it) and for the mean over the other 9 states, R with
each, and the share of sequences with R > 0. Then the two tests of the premise:

- `retrained_minus_original`: per sequence Δ = R(retrained) − R(original); the paper finds Δ < 0 for most forget
  samples (its Fig. 4). Reported as the share with Δ < 0 per group: for forget-1 the premise predicts well over half,
  for the groups both models saw or neither saw it predicts nothing;
- `membership_auc`: under one model, the probability that a seen sequence has a higher R than an unseen one of the
  same chain (0.5: R says nothing about membership).

Models in eval mode (no dropout); float32; one thread.

    python benchmarks/mumis_premise_markov.py [--models-dir outputs/markov/models] [--examples 250] [--positions all]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from hf_unlearn.evaluation import mia_auc
from hf_unlearn.evaluation.input_sensitivity import jacobian_norms, relative_magnitudes

ROOT = Path(__file__).resolve().parent.parent
GROUPS = ["forget1_train", "forget2_train", "forget1_test", "forget2_test", "retain_train", "retain_test"]
# (seen, unseen) pairs of one chain, for the membership test; which model saw the first one.
MEMBERSHIP = {"forget1": ("forget1_train", "forget1_test"), "retain": ("retain_train", "retain_test")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "outputs" / "markov" / "models")
    parser.add_argument("--examples", type=int, default=250, help="Sequences per group.")
    parser.add_argument(
        "--positions", default="2,6,10,14,18", help="Answer positions measured per sequence (comma-separated; 'all')."
    )
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "mumis_premise_markov.json")
    args = parser.parse_args()

    from transformers import GPT2LMHeadModel

    from hf_unlearn.reporting import format_table
    from hf_unlearn.runtime.io import atomic_write_json
    from hf_unlearn.tasks.markov.data import MarkovDataArguments, make_markov_datasets

    torch.set_num_threads(1)
    tick = time.perf_counter()
    data_args = MarkovDataArguments()
    data = make_markov_datasets(data_args, seed=42)
    ids = {g: torch.tensor(data[g]["input_ids"][: args.examples]) for g in GROUPS}
    positions = None if args.positions == "all" else [int(t) for t in args.positions.split(",")]
    per_sequence: dict = {}  # model -> output -> group -> quantity -> (N,)
    for name in ("original", "retrained"):
        model = GPT2LMHeadModel.from_pretrained(args.models_dir / name, attn_implementation="eager").eval()
        per_sequence[name] = {"logit": {}, "logprob": {}}
        for group in GROUPS:
            norms = jacobian_norms(model, ids[group], positions)
            for output, values in norms.items():
                per_sequence[name][output][group] = relative_magnitudes(
                    values, ids[group], data_args.num_states, seed=GROUPS.index(group), positions=positions
                )
    results: dict = {
        "examples_per_group": args.examples,
        "positions": positions or "all",
        "eval_mode": True,
        "threads": 1,
        "groups": {},
        "retrained_minus_original": {},
        "membership_auc": {},
    }
    rows = []
    for output in ("logit", "logprob"):
        for name in ("original", "retrained"):
            for group in GROUPS:
                q = per_sequence[name][output][group]
                summary = {key: float(value.mean()) for key, value in q.items()}
                summary["share_R_random_positive"] = float((q["R_random"] > 0).float().mean())
                summary["share_R_states_mean_positive"] = float((q["R_states_mean"] > 0).float().mean())
                results["groups"].setdefault(output, {}).setdefault(name, {})[group] = summary
                rows.append([output, name, group, summary["target"], summary["other_random"],
                             summary["R_random"], summary["share_R_random_positive"], summary["R_states_mean"]])  # fmt: skip
    print(format_table(rows, ["f", "model", "group", "‖∇f_c‖²", "‖∇f_c'‖²", "R", "R > 0", "R (c' = mean state)"]))

    rows = []
    for output in ("logit", "logprob"):
        for group in GROUPS:
            entry = {}
            for key in ("R_random", "R_states_mean", "target", "other_states_mean"):
                delta = per_sequence["retrained"][output][group][key] - per_sequence["original"][output][group][key]
                entry[f"share_{key}_falls"] = float((delta < 0).float().mean())
                entry[f"mean_delta_{key}"] = float(delta.mean())
            results["retrained_minus_original"].setdefault(output, {})[group] = entry
            rows.append([output, group, entry["share_R_random_falls"], entry["share_R_states_mean_falls"],
                         entry["share_target_falls"], entry["share_other_states_mean_falls"]])  # fmt: skip
    print("\nShare of sequences whose value is lower in the retrained model than in the original (premise: > 0.5 "
          "on forget1_train):")  # fmt: skip
    print(format_table(rows, ["f", "group", "R", "R (c' = mean state)", "‖∇f_c‖²", "mean ‖∇f_c'‖²"]))

    rows = []
    for output in ("logit", "logprob"):
        for name in ("original", "retrained"):
            for chain, (seen, unseen) in MEMBERSHIP.items():
                values = {  # P(R seen > R unseen): the unseen sequences play the "forget" side of mia_auc
                    key: mia_auc(
                        per_sequence[name][output][unseen][key].numpy(), per_sequence[name][output][seen][key].numpy()
                    )
                    for key in ("R_random", "R_states_mean")
                }
                seen_by = chain == "retain" or name == "original"
                results["membership_auc"].setdefault(output, {}).setdefault(name, {})[chain] = {
                    **values,
                    "train_split_seen_by_model": seen_by,
                }
                rows.append([output, name, f"{seen} vs {unseen}", seen_by, values["R_random"], values["R_states_mean"]])
    print("\nP(R of a train-split sequence > R of a test-split one) (0.5: no membership signal):")
    print(format_table(rows, ["f", "model", "pair", "train split seen", "AUC (R)", "AUC (R, c' = mean state)"]))
    results["seconds"] = time.perf_counter() - tick
    atomic_write_json(args.output, results)
    print(f"\nWrote {args.output} ({results['seconds']:.0f} s).")


if __name__ == "__main__":
    main()
