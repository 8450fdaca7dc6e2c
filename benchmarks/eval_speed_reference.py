"""Our TOFU evaluator against the reference toolkit's own evaluator, side by side, on the same model and items.

    python benchmarks/eval_speed_reference.py --reference-src path/to/open-unlearning --data-dir path/to/tofu \
        --model path/to/smollm2-135m-instruct --max-items 20 --max-new-tokens 64 --repeats 3
    python benchmarks/eval_speed_reference.py --compare REFERENCE_RUN OURS_RUN --output agreement.json
        # only the item-by-item comparison of two finished runs' folders (with `rtol`)

`--reference-src` is a checkout of the reference toolkit (open-unlearning) fetched by the user, at the commit stated in
the results (`REFERENCE_COMMIT`); nothing of it is copied here. Each run is its own process:

- reference: `python eval_speed_reference.py --child reference ...` puts the checkout's `src/` on `sys.path`,
  composes its Hydra configuration (`configs/eval.yaml`, `experiment=eval/tofu/default`) with overrides only (the
  model folder, fp32, SDPA attention, the CPU, forget05/holdout05, batch size 32, `max_new_tokens`, the system
  prompt) and calls its `TOFUEvaluator.evaluate`, as its `src/eval.py` does. One thing is patched at run time, in that
  process only: its `data.utils.load_hf_dataset` (which calls `datasets.load_dataset("locuslab/TOFU", name=...,
  split="train")`) reads the same configuration from the local folder's JSON lines instead, and takes the first N
  rows (`split="train[:N]"`) for `--max-items N`.
- ours: `hf-unlearn eval --preset reference` on the same model, folder, items, system prompt and generation budget
  (`--ours-preset default`: with our default settings instead, timed only: their conventions differ from the
  reference's, so the outputs are not compared; needs its own `--output`).

The two alternate (reference, ours, reference, ...), so that the load of a shared machine hits both alike. Every run's
wall time (the evaluation call alone, model loading excluded, and the whole process), the medians, their ratio and
the load average before and after each run go to `benchmarks/results/eval_speed_reference.json`, with an item-by-item
comparison of the last pair of runs: every greedy generation (compared as text decoded from the same tokens, both
sides cut at the first stop token) and every teacher-forced per-item value the reference logs (Q_A_Prob, paraphrased
and perturbed probabilities, truth ratio, extraction strength, min-k scores, the normalised probabilities of real
authors and world facts), within `RTOL` relative.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "eval_speed_reference.json"
DEFAULT_PRESET_NOTE = (
    "ours ran with its default settings, whose label convention, attention mask and extraction-strength floor differ "
    "from the reference's conventions (docs/metrics.md#reference-quirks): the outputs are not comparable item by item"
)
REFERENCE_COMMIT = "d3d7cf9"
REFERENCE_BATCH = 32  # the reference's default `eval.tofu.batch_size`
SYSTEM_PROMPT = "You are a helpful assistant."
DATE_STRING = "10 Apr 2025"
RUNTIME_PATCHES = [
    "data.utils.load_hf_dataset (and its import in data.qa) reads the local JSON lines, first N rows",
    "the tokenizer instance's apply_chat_template defaults to return_dict=False (transformers 4.x behaviour)",
    "empty stand-in modules for deepspeed and lm_eval when absent (imported, never called by the TOFU evaluation)",
]
RTOL = 1e-4  # relative tolerance on teacher-forced per-item values (fp32, other batch shapes and padding)


# ----------------------------------------------------------------------------------------------------------- children
def run_reference(args: argparse.Namespace) -> None:
    """One run of the reference evaluator in this process; writes its logs and timing to `args.out`."""
    src = Path(args.reference_src).resolve() / "src"
    sys.path.insert(0, str(src))
    import data.qa
    import data.utils
    import datasets
    from hydra import compose, initialize_config_dir

    def load_local(path, name=None, split="train", **kwargs):  # the run-time patch described above
        if path != "locuslab/TOFU":
            raise ValueError(f"unexpected dataset {path!r}")
        part = split if args.max_items is None else f"{split}[:{args.max_items}]"
        return datasets.load_dataset("json", data_files=str(Path(args.data_dir) / f"{name}.jsonl"), split=part)

    data.utils.load_hf_dataset = load_local
    data.qa.load_hf_dataset = load_local
    _stub_lm_eval()
    from evals import get_evaluators
    from model import get_model
    from trainer.utils import seed_everything

    out = Path(args.out)
    overrides = [
        "experiment=eval/tofu/default",
        "forget_split=forget05",
        "holdout_split=holdout05",
        f"model.model_args.pretrained_model_name_or_path={args.model}",
        f"model.tokenizer_args.pretrained_model_name_or_path={args.model}",
        "model.model_args.attn_implementation=sdpa",
        "model.model_args.torch_dtype=float32",
        "model.model_args.device_map=cpu",
        "model.template_args.apply_chat_template=true",
        f"model.template_args.system_prompt='{SYSTEM_PROMPT}'",
        f"model.template_args.date_string='{DATE_STRING}'",
        f"eval.tofu.batch_size={REFERENCE_BATCH}",
        "eval.tofu.overwrite=true",
        f"paths.root_dir={out}",
        "task_name=reference",
    ]
    with initialize_config_dir(config_dir=str(Path(args.reference_src).resolve() / "configs"), version_base=None):
        cfg = compose(config_name="eval.yaml", overrides=overrides)
    # Every generating metric's budget (the reference's generation default is 200 new tokens).
    for metric in _walk_generation_args(cfg.eval.tofu.metrics):
        metric.max_new_tokens = args.max_new_tokens
    seed_everything(cfg.seed)
    tic = time.perf_counter()
    model, tokenizer = get_model(cfg.model)
    load_s = time.perf_counter() - tic
    _token_lists_from_chat_template(tokenizer)
    evaluators = get_evaluators(cfg.eval)
    tic = time.perf_counter()
    for evaluator in evaluators.values():
        evaluator.evaluate(model=model, tokenizer=tokenizer, template_args=cfg.model.template_args, output_dir=str(out))
    eval_s = time.perf_counter() - tic
    (out / "timing.json").write_text(json.dumps({"load_s": load_s, "eval_s": eval_s}))


def _token_lists_from_chat_template(tokenizer) -> None:
    """The reference was written for transformers 4.x, whose `apply_chat_template(tokenize=True)` returns a list of
    token ids; 5.x returns a `BatchEncoding` unless `return_dict=False`. This instance's method gets that default
    back (the second run-time patch; the ids are the same)."""
    original = tokenizer.apply_chat_template

    def apply_chat_template(*args, **kwargs):
        kwargs.setdefault("return_dict", False)
        return original(*args, **kwargs)

    tokenizer.apply_chat_template = apply_chat_template


def _stub_lm_eval() -> None:
    """The reference's `evals` package imports its lm-eval-harness evaluator at import time, and its `trainer` package
    (whose `seed_everything` the evaluation calls) DeepSpeed for RMU; the TOFU evaluation uses neither, so when they
    are not installed empty modules stand in for them (names only, never called)."""
    import importlib.machinery
    import importlib.util
    import types

    def stub(name: str) -> None:
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].__spec__ = importlib.machinery.ModuleSpec(name, None)  # no package metadata: "absent"

    if importlib.util.find_spec("deepspeed") is None:
        stub("deepspeed")
    if importlib.util.find_spec("lm_eval") is not None:
        return
    for name in ("lm_eval", "lm_eval.models", "lm_eval.models.hf_vlms", "lm_eval.tasks"):
        stub(name)
    sys.modules["lm_eval"].simple_evaluate = None
    sys.modules["lm_eval.models.hf_vlms"].HFLM = None
    sys.modules["lm_eval.tasks"].TaskManager = None


def _walk_generation_args(node):
    from omegaconf import DictConfig

    if isinstance(node, DictConfig):
        for key, value in node.items():
            if key == "generation_args" and isinstance(value, DictConfig):
                yield value
            else:
                yield from _walk_generation_args(value)


def ours_command(args: argparse.Namespace, out: Path) -> list[str]:
    """`hf-unlearn eval --preset reference ...` (`--ours-preset default`: without `--preset`); with
    `--ours-processes N > 1`, launched by `torchrun` as N processes (the batches are dealt to them; the outputs are
    those of one process)."""
    launcher = [sys.executable]
    if args.ours_processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.ours_processes)]
    command = [
        *launcher,
        "-m",
        "hf_unlearn.cli",
        "eval",
        "--model",
        args.model,
        "--data-dir",
        args.data_dir,
        "--output-dir",
        str(out),
        *(["--preset", "reference"] if args.ours_preset == "reference" else []),
        "--forget-split",
        "forget05",
        "--dtype",
        "float32",
        "--device",
        "cpu",
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--system-prompt",
        SYSTEM_PROMPT,
        "--recompute",
        "--quiet",
    ]
    if args.max_items is not None:
        command += ["--max-items", str(args.max_items)]
    return command + list(args.ours_args)


# ------------------------------------------------------------------------------------------------------- comparison
# (reference log key, its per-item field) -> (our split, our per-item field); lists compare element by element.
TEACHER_FORCED_PAIRS = {
    **{
        (f"{ref}_Q_A_Prob", "avg_loss"): (split, "avg_nll")
        for ref, split in (("forget", "forget"), ("retain", "retain"), ("ra", "real_authors"), ("wf", "world_facts"))
    },
    ("forget_Q_A_Prob", "prob"): ("forget", "prob"),
    ("retain_Q_A_Prob", "prob"): ("retain", "prob"),
    **{
        (f"{ref}_Q_A_PARA_Prob", "avg_loss"): (split, "correct_avg_nll")
        for ref, split in (("forget", "forget"), ("retain", "retain"))
    },
    **{
        (f"{ref}_Q_A_PERT_Prob", "avg_loss"): (split, "wrong_avg_nlls")
        for ref, split in (("forget", "forget"), ("retain", "retain"), ("ra", "real_authors"), ("wf", "world_facts"))
    },
    ("forget_truth_ratio", "score"): ("forget", "truth_ratio"),
    ("retain_Truth_Ratio", "score"): ("retain", "truth_ratio"),
    ("ra_Truth_Ratio", "score"): ("real_authors", "truth_ratio"),
    ("wf_Truth_Ratio", "score"): ("world_facts", "truth_ratio"),
    ("ra_Q_A_Prob_normalised", "prob"): ("real_authors", "normalized_prob"),
    ("wf_Q_A_Prob_normalised", "prob"): ("world_facts", "normalized_prob"),
    ("extraction_strength", "score"): ("forget", "extraction_strength"),
    ("mia_min_k/forget", "score"): ("forget", "mia_min_k"),
    ("mia_min_k/holdout", "score"): ("holdout", "mia_min_k"),
}
GENERATION_PAIRS = {
    "forget_Q_A_ROUGE": "forget",
    "retain_Q_A_ROUGE": "retain",
    "ra_Q_A_ROUGE": "real_authors",
    "wf_Q_A_ROUGE": "world_facts",
}


def _reference_entries(log: dict) -> dict[str, dict]:
    """`{metric: value_by_index}` of the reference's TOFU_EVAL.json (an attack's splits as `mia_min_k/forget`)."""
    found = {}
    for name, entry in log.items():
        if not isinstance(entry, dict):
            continue
        if "value_by_index" in entry:
            found[name] = entry["value_by_index"]
        for key, sub in entry.items():
            if isinstance(sub, dict) and "value_by_index" in sub:
                found[f"{name}/{key}"] = sub["value_by_index"]
    return found


def compare(reference_dir: Path, ours_dir: Path) -> dict:
    """Item-by-item agreement of the reference's per-item logs with ours (`items.json`)."""
    ref = _reference_entries(json.loads((reference_dir / "TOFU_EVAL.json").read_text()))
    items = json.loads((ours_dir / "items.json").read_text())["splits"]
    report: dict = {"teacher_forced": {}, "generation": {}}
    for (metric, ref_field), (split, field) in TEACHER_FORCED_PAIRS.items():
        if metric not in ref:
            report["teacher_forced"][f"{metric}.{ref_field}"] = {"missing": "not in the reference's log"}
            continue
        worst, count, bad = 0.0, 0, []
        for index, entry in ref[metric].items():
            a, b = entry[ref_field], items[split][int(index)][field]
            for x, y in zip(*(v if isinstance(v, list) else [v] for v in (a, b)), strict=True):
                rel = abs(x - y) / max(abs(x), 1e-30)
                worst, count = max(worst, rel), count + 1
                if rel > RTOL:
                    bad.append({"index": int(index), "reference": x, "ours": y})
        report["teacher_forced"][f"{metric}.{ref_field}"] = {"values": count, "max_rel_diff": worst, "beyond_rtol": bad}
    for metric, split in GENERATION_PAIRS.items():
        same, differ = 0, []
        for index, entry in ref.get(metric, {}).items():
            ours = items[split][int(index)]
            if ours["generation"] == entry["generation"] and ours["rougeL_recall"] == entry["rougeL_recall"]:
                same += 1
            else:
                differ.append({"index": int(index), "reference": entry["generation"], "ours": ours["generation"]})
        report["generation"][metric] = {"identical": same, "differ": differ}
    report["all_identical"] = all(
        "missing" not in v and not v["beyond_rtol"] for v in report["teacher_forced"].values()
    ) and all(not v["differ"] and v["identical"] for v in report["generation"].values())
    return report


# ------------------------------------------------------------------------------------------------------- orchestrator
def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _threads(kind: str, args: argparse.Namespace) -> int:
    """Threads of each process of one side: `--reference-threads` / `--ours-threads`, else `--threads`."""
    own = args.reference_threads if kind == "reference" else args.ours_threads
    return args.threads if own is None else own


def _command(kind: str, args: argparse.Namespace, out: Path) -> tuple[list[str], dict[str, str]]:
    """The command line of one run and the thread settings of its environment."""
    threads = str(_threads(kind, args))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    if kind == "reference":
        command = [
            sys.executable,
            __file__,
            "--child",
            "reference",
            "--reference-src",
            args.reference_src,
            "--data-dir",
            args.data_dir,
            "--model",
            args.model,
            "--max-new-tokens",
            str(args.max_new_tokens),
            "--out",
            str(out),
        ]
        command += ["--max-items", "all" if args.max_items is None else str(args.max_items)]
    else:
        command = ours_command(args, out)
    return command, env


def _run(kind: str, args: argparse.Namespace, out: Path, log) -> dict:
    command, threads = _command(kind, args, out)
    env = dict(os.environ, **threads)
    before, cpu = _load(), _children_cpu()
    tic = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(out.parent))
    wall = time.perf_counter() - tic
    cpu = _children_cpu() - cpu
    if done.returncode:
        raise RuntimeError(f"{kind} run failed (exit {done.returncode}); see the log")
    if kind == "reference":
        eval_s = json.loads((out / "timing.json").read_text())["eval_s"]
    else:
        eval_s = json.loads((out / "summary.json").read_text())["timing_s"]["total"]
    return {
        "eval_s": round(eval_s, 2),
        "process_s": round(wall, 2),
        "process_cpu_s": round(cpu, 2),
        "load_before": before,
        "load_after": _load(),
    }


def _settings(args: argparse.Namespace) -> dict:
    threads = {kind: _threads(kind, args) for kind in ("reference", "ours")}
    return {
        "model": Path(args.model).name,
        "dtype": "float32",
        "forget_split": "forget05",
        "max_items_per_split": args.max_items,
        "max_new_tokens": args.max_new_tokens,
        "reference_batch_size": REFERENCE_BATCH,
        "system_prompt": SYSTEM_PROMPT,
        # Threads of each process; the reference runs one process, ours `ours_processes`.
        "threads_per_run": threads["reference"] if len(set(threads.values())) == 1 else None,
        "threads_per_process": threads,
        "ours_processes": args.ours_processes,
        "ours_preset": args.ours_preset,
        "cores_used": {"reference": threads["reference"], "ours": threads["ours"] * args.ours_processes},
        "ours_command": " ".join(ours_command(args, Path("OUT"))[1:]),
        "repeats": args.repeats,
    }


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _item_limit(value: str) -> int | None:
    if value == "all":
        return None
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'all', got {value!r}")
    return int(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-src", help="checkout of the reference toolkit")
    parser.add_argument("--data-dir", help="local TOFU JSON lines folder")
    parser.add_argument("--model", help="local model folder (safetensors)")
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("REFERENCE_RUN", "OURS_RUN"),
        help="only compare two finished runs' folders (the reference's TOFU_EVAL.json, our items.json) item by item "
        "and write the agreement, with `rtol`, to --output",
    )
    parser.add_argument(
        "--max-items", type=_item_limit, default=20, help="first N items of every split, or 'all' (the full suite)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="OMP threads of each run's processes")
    parser.add_argument(
        "--reference-threads", type=int, help="OMP threads of the reference's process (default --threads)"
    )
    parser.add_argument("--ours-threads", type=int, help="OMP threads of each of our processes (default --threads)")
    parser.add_argument(
        "--ours-processes",
        type=int,
        default=1,
        help="run ours as this many processes (torchrun), e.g. 2 processes x 1 thread against the reference's 2 threads",
    )
    parser.add_argument(
        "--ours-preset",
        choices=["reference", "default"],
        default="reference",
        help="ours under --preset reference (outputs compared item by item) or with its default settings (other "
        "conventions: timed only, outputs not compared)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the settings and each side's command and threads; run nothing"
    )
    parser.add_argument("--output", default=str(RESULT))
    parser.add_argument("--work-dir", default=None, help="where the runs write (default: a temporary folder)")
    parser.add_argument("--child", choices=["reference"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("ours_args", nargs="*", help="extra flags for `hf-unlearn eval` (after --)")
    args = parser.parse_args()
    if args.child == "reference":
        run_reference(args)
        return
    if args.compare:
        if args.output == str(RESULT):
            parser.error("--compare needs its own --output (the default is the committed benchmark result)")
        agreement = {**compare(*map(Path, args.compare)), "rtol": RTOL}
        Path(args.output).write_text(json.dumps(agreement, indent=2) + "\n")
        print("all identical:", agreement["all_identical"])
        return
    if args.ours_preset != "reference" and args.output == str(RESULT):
        parser.error("--ours-preset default needs its own --output (the default is the reference-preset result)")
    missing = [flag for flag in ("reference_src", "data_dir", "model") if getattr(args, flag) is None]
    if missing:
        parser.error("the benchmark needs " + ", ".join("--" + flag.replace("_", "-") for flag in missing))
    for flag in ("threads", "reference_threads", "ours_threads", "ours_processes"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    args.model, args.data_dir = str(Path(args.model).resolve()), str(Path(args.data_dir).resolve())
    if args.dry_run:
        plan = {
            "settings": _settings(args),
            "runs": {
                kind: dict(zip(("command", "env"), _command(kind, args, Path("OUT")), strict=True))
                for kind in ("reference", "ours")
            },
        }
        print(json.dumps(plan, indent=2))
        return
    commit = subprocess.run(
        ["git", "-C", args.reference_src, "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="eval_speed_reference_")).resolve()  # children run elsewhere
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {"reference": [], "ours": []}
    with open(work / "runs.log", "a") as log:
        for repeat in range(args.repeats):
            for kind in ("reference", "ours"):
                out = work / f"{kind}_{repeat}"
                out.mkdir(exist_ok=True)
                print(f"[{time.strftime('%H:%M:%S')}] {kind} run {repeat + 1}/{args.repeats}", flush=True)
                log.flush()
                runs[kind].append(_run(kind, args, out, log))
                print(f"    {runs[kind][-1]}", flush=True)
    last = args.repeats - 1
    agreement = (
        compare(work / f"reference_{last}", work / f"ours_{last}")
        if args.ours_preset == "reference"
        else {"not_compared": DEFAULT_PRESET_NOTE, "all_identical": None}
    )
    medians = {kind: statistics.median(r["eval_s"] for r in rs) for kind, rs in runs.items()}
    cpu_medians = {kind: statistics.median(r["process_cpu_s"] for r in rs) for kind, rs in runs.items()}
    result = {
        "reference": {
            "toolkit": "open-unlearning",
            "commit": commit or REFERENCE_COMMIT,
            "runtime_patches": RUNTIME_PATCHES,
        },
        "settings": _settings(args),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "runs": runs,
        "median_eval_s": medians,
        "ratio_of_medians": round(medians["reference"] / medians["ours"], 3),
        "median_process_cpu_s": cpu_medians,
        "cpu_ratio_of_medians": round(cpu_medians["reference"] / cpu_medians["ours"], 3),
        "ratios_per_pair": [
            round(r["eval_s"] / o["eval_s"], 3) for r, o in zip(runs["reference"], runs["ours"], strict=True)
        ],
        "agreement": agreement,
        "rtol": RTOL,
    }
    sys.path.insert(0, str(REPO))
    from hf_unlearn.runtime.io import atomic_write_json

    atomic_write_json(Path(args.output), result)
    print(json.dumps({k: result[k] for k in ("median_eval_s", "ratio_of_medians", "ratios_per_pair")}))
    print("all identical:", agreement["all_identical"] if args.ours_preset == "reference" else "not compared")


if __name__ == "__main__":
    main()
