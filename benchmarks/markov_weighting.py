"""Sample-level against token-level weighting of gradient ascent on the Markov task, at matched forgetting, over seeds.

    python benchmarks/markov_weighting.py [--seeds 0 1 2 3 4]

Runs (`VARIANTS`) the plain losses GA, NPO, SimNPO; the token-weighted WGA and SatImp; the sample-weighted IMU (its
influence weights ŵ_i on GA) on the LM head alone (the paper) and on every parameter; the permutation control of each
(the same weights shuffled across the forget samples, a new permutation per seed); GA on the head alone (IMU-head's
parameters without the weights); and IMU's weights on top of NPO and of SatImp (`influence_weighting` on their
configs: every forget loss takes the per-sample weights through the shared forward pass, `ForgetBatch.weights`, so
no loss is rewritten).

Settings: each variant's learning rate (and key coefficient) is the best grid point of its base method at the target
forget KL in `benchmarks/results/markov_method_grid.json` (run `benchmarks/markov_method_grid.py` first); GA-head and
the permutation controls take IMU's. Every run is 50 steps of batch 4, evaluated after every step on the first 50
test sequences per chain, with the cached original and retrained models of `outputs/markov/models`; the seed changes
the unlearning run only (the order of forget batches, the permutation), not the data or the models.

For each run the retain KL is read where the forget KL first reaches each level (linear between steps); per variant
and level the mean over seeds with a two-sided 95 % Student-t interval (mean ± t_{0.975, n−1}·s/√n), and for the
contrasts (CONTRASTS) the difference of the two means with a Welch 95 % interval. Also per variant, over seeds: the
closest approach to the retrained model along the trajectory (the smallest forget KL + retain KL). Each run stops at
the first step that reaches the highest level (`evaluation.stop_at_forget_kl`). Writes
`benchmarks/results/markov_weighting.json`; `--from-json` summarizes its stored trajectories again without running.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from hf_unlearn.evaluation import value_at_level
from hf_unlearn.recipe import load_recipe
from hf_unlearn.reporting import format_table
from hf_unlearn.runtime.io import atomic_write_json
from hf_unlearn.runtime.versions import environment_versions
from hf_unlearn.tasks.markov import mean_interval, parse_markov_recipe, run_markov, welch_interval

ROOT = Path(__file__).resolve().parent.parent
# variant -> (base method of the grid whose best settings it takes, changes on top of them)
VARIANTS = {
    "GA": ("GA", {}),
    "NPO": ("NPO", {}),
    "SimNPO": ("SimNPO", {}),
    "WGA": ("WGA", {}),
    "SatImp": ("SatImp", {}),
    "GA-head": ("IMU", {"method": "GA", "influence_weighting": None, "trainable": "head"}),
    "IMU-head": ("IMU", {"trainable": "head"}),
    "IMU-head-permuted": ("IMU", {"trainable": "head", "_permuted": True}),
    "IMU-all": ("IMU", {"trainable": "all"}),
    "IMU-all-permuted": ("IMU", {"trainable": "all", "_permuted": True}),
    "IMU-NPO": ("NPO", {"_weights": True}),
    "IMU-SatImp": ("SatImp", {"_weights": True}),
}
# The default run (sized to a 2-core CPU): GA-head and IMU-head's permutation control are left out (the one-seed
# study of benchmarks/imu_matched_forgetting.py has them); `--variants` adds them.
DEFAULT_VARIANTS = [v for v in VARIANTS if v not in ("GA-head", "IMU-head-permuted")]
CONTRASTS = [
    ("IMU-head", "GA"),
    ("IMU-head", "GA-head"),
    ("IMU-head", "IMU-head-permuted"),
    ("IMU-all", "GA"),
    ("IMU-all", "IMU-all-permuted"),
    ("WGA", "GA"),
    ("SatImp", "GA"),
    ("IMU-all", "WGA"),
    ("IMU-all", "SatImp"),
    ("IMU-NPO", "NPO"),
    ("IMU-SatImp", "SatImp"),
]
LEVELS = [0.5, 1.0]
TRAJECTORY_EXAMPLES = 50


def variant_spec(variant: str, grid: dict, target: str, seed: int, weighting: dict) -> dict:
    """The run of `variant` for `seed`: its base method's best grid settings at `target`, then its changes."""
    base, changes = VARIANTS[variant]
    best = grid["methods"][base]["at_forget_kl"][target]
    if best is None:
        raise SystemExit(f"{base} never reaches forget KL {target} in the grid: no setting to take.")
    settings = grid["methods"][base]["grid"][best["run"]]["settings"]
    if variant.startswith("IMU-") and base == "IMU":  # IMU's best point fixes the lr; `trainable` is the variant's
        points = [
            (row, label)
            for label, point in grid["methods"]["IMU"]["grid"].items()
            if point["settings"].get("trainable") == changes["trainable"]
            and (row := point["at_forget_kl"][target]) is not None
        ]
        settings = grid["methods"]["IMU"]["grid"][min(points, key=lambda p: p[0]["retain_kl"])[1]]["settings"]
    if variant == "GA-head":  # IMU-head's learning rate, without the weights
        settings = variant_spec("IMU-head", grid, target, seed, weighting)
    spec = {**settings, **{k: v for k, v in changes.items() if not k.startswith("_")}, "seed": seed}
    if changes.get("_weights"):
        spec["influence_weighting"] = dict(weighting)
    if changes.get("_permuted"):
        spec["influence_weighting"] = {**spec["influence_weighting"], "permutation_seed": seed}
    return {k: v for k, v in spec.items() if v is not None}


def summarize(runs: dict[str, dict[str, dict]]) -> dict:
    """From each run's trajectory (`runs[variant][seed]["history"]`): per variant and level the retain KL where the
    forget KL first reaches the level, over seeds (mean, 95 % t-interval, how many seeds reach it); the contrasts'
    Welch intervals; and per variant the closest approach to the retrained model (the smallest forget KL + retain KL
    along the trajectory), over seeds."""
    table, closest = {}, {}
    for variant, seeds in runs.items():
        per_level = {}
        for level in LEVELS:
            values = [value_at_level(run["history"], "forget_kl", "retain_kl", level) for run in seeds.values()]
            reached = [v for v in values if v is not None]
            per_level[str(level)] = {
                **(mean_interval(reached) if reached else {"n": 0}),
                "seeds_reaching": len(reached),
            }
        table[variant] = per_level
        closest[variant] = mean_interval(
            [min(h["forget_kl"] + h["retain_kl"] for h in run["history"]) for run in seeds.values()]
        )
    contrasts = {}
    for a, b in CONTRASTS:
        if a not in table or b not in table:
            continue
        for level in LEVELS:
            va, vb = table[a][str(level)].get("values"), table[b][str(level)].get("values")
            if va and vb and len(va) > 1 and len(vb) > 1:
                contrasts.setdefault(f"{a} - {b}", {})[str(level)] = welch_interval(va, vb)
    return {"retain_kl_at_forget_kl": table, "contrasts": contrasts, "closest_to_retrained": closest}


def reuse_influence_scores() -> None:
    """Every run of this study starts from the same original model with the same forget set and influence settings,
    so its influence scores are the same: compute them once per (settings, model weights) and reuse them (the
    weights, their permutation and the kept subset are still made per run from the scores). This only saves time;
    the IMU runs' `unlearn_seconds` then leave the influence pass out."""
    import torch

    from hf_unlearn.trainers import influence_weighting

    compute = influence_weighting.compute_influence
    cache = {}

    def cached(model, dataset, args):
        with torch.no_grad():
            checksum = tuple(round(float(p.double().sum()), 6) for p in model.parameters())
        key = (getattr(dataset, "_fingerprint", id(dataset)), len(dataset), repr(args), checksum)
        if key not in cache:
            cache[key] = compute(model, dataset, args)
        else:
            print("Reusing the influence scores computed for an earlier run of this study.", flush=True)
        return cache[key]

    influence_weighting.compute_influence = cached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--target", type=float, default=1.0, help="Forget KL level whose best grid point is used.")
    parser.add_argument("--grid", type=Path, default=ROOT / "benchmarks/results/markov_method_grid.json")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "outputs" / "markov" / "models")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "outputs" / "markov_weighting")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/markov_weighting.json")
    parser.add_argument("--load", default="", help="What else ran on the machine (recorded with the times).")
    parser.add_argument(
        "--from-json", action="store_true", help="Run nothing: summarize the trajectories already in --json again."
    )
    args = parser.parse_args()
    if args.from_json:
        payload = json.loads(args.json.read_text())
        write({**payload, "levels": LEVELS, **summarize(payload["runs"])}, args.json)
        return

    grid = json.loads(args.grid.read_text())
    raw = copy.deepcopy(load_recipe(ROOT / "recipes" / "markov.yaml"))
    weighting = raw["methods"]["IMU"]["influence_weighting"]
    raw["evaluation"] = {
        **(raw.get("evaluation") or {}),
        "trajectory_examples": TRAJECTORY_EXAMPLES,
        "final_examples": TRAJECTORY_EXAMPLES,
        "stop_at_forget_kl": max(LEVELS),  # no step past the highest level is read
    }
    raw.pop("original_gradient_restriction", None)
    target = str(args.target)
    specs = {
        f"{variant}#seed{seed}": variant_spec(variant, grid, target, seed, weighting)
        for variant in args.variants
        for seed in args.seeds
    }
    raw["methods"] = specs
    recipe = parse_markov_recipe(raw, output_dir=str(args.output_dir))
    recipe.models_dir = str(args.models_dir)
    reuse_influence_scores()
    tick = time.perf_counter()
    results = run_markov(recipe)
    seconds = time.perf_counter() - tick

    runs = {
        variant: {
            str(seed): {
                "settings": specs[f"{variant}#seed{seed}"],
                "unlearn_seconds": results["methods"][f"{variant}#seed{seed}"]["unlearn_seconds"],
                "end": {
                    key: results["methods"][f"{variant}#seed{seed}"][key]
                    for key in ("forget_kl", "retain_kl", "forget_loss", "retain_loss", "forget1_kl", "forget2_kl")
                },
                "history": [
                    {key: h[key] for key in ("step", "forget_kl", "retain_kl")}
                    for h in results["methods"][f"{variant}#seed{seed}"]["history"]
                ],
            }
            for seed in args.seeds
        }
        for variant in args.variants
    }
    payload = {
        "benchmark": "markov_weighting",
        "levels": LEVELS,
        "target_for_settings": args.target,
        "seeds": args.seeds,
        "trajectory_examples": TRAJECTORY_EXAMPLES,
        "interval": "95 % Student-t interval of the mean over seeds; contrasts: Welch 95 % interval of the difference",
        "variants": {variant: list(VARIANTS[variant]) for variant in args.variants},
        **summarize(runs),
        "runs": runs,
        "seconds": seconds,
        "load": args.load,
        "environment": environment_versions(),
    }
    write(payload, args.json)


def write(payload: dict, path: Path) -> None:
    atomic_write_json(path, payload)
    rows = []
    for variant, levels in payload["retain_kl_at_forget_kl"].items():
        cells = []
        for level in LEVELS:
            cell = levels[str(level)]
            cells.append(
                f"{cell['mean']:.3f} [{cell['ci'][0]:.3f}, {cell['ci'][1]:.3f}] ({cell['seeds_reaching']})"
                if cell["n"] > 1
                else f"{cell['seeds_reaching']} seeds reach it"
            )
        rows.append([variant] + cells)
    print(format_table(rows, ["variant"] + [f"rKL @ fKL {level:g}" for level in LEVELS]))
    print(f"Wrote {path}.")


if __name__ == "__main__":
    main()
