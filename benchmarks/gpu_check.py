"""The GPU check behind `benchmarks/gpu_check.sh`: evaluation schedules, bf16 training steps, two-process evaluation.

    bash benchmarks/gpu_check.sh                      # one or two GPUs, about 1B parameters, within 8 minutes
    bash benchmarks/gpu_check.sh --dry-run            # the same steps on the CPU with a tiny model (seconds)

Nothing is downloaded. The model is a Llama-architecture model initialised at random from a config (about 1.07B
parameters: 16 layers, width 2048, MLP 8192, 32 query and 8 key/value heads, tied embeddings). The tokenizer is
`--tokenizer DIR` when given (e.g. a local copy of SmolLM2's tokenizer files placed in the checkout, whose 49,152-token
vocabulary sizes the LM head realistically), else the byte-level BPE tokenizer the tests train from the repository's
TOFU fixtures (`tests/tofu_helpers.make_tokenizer`, ChatML template, about 420 tokens); the model's vocabulary follows
the tokenizer. The TOFU rows are `--data-dir` (default: a `shared/tofu` folder beside the checkout when present, else the
test fixtures in `tests/fixtures/tofu`).

It checks and records, in one JSON (`--output`, default `benchmarks/results/gpu_check.json`):

1. our TOFU evaluator's greedy generation on the forget05 items' prompts with every schedule this machine has
   (`generate`, `refill`, `static_compile`, and `vllm` when installed): wall time, new tokens per second, and whether
   every schedule gives the same text as `generate` prompt by prompt;
2. the whole `evaluate_tofu` suite once (default schedule), its wall time and stage timings;
3. one IMU step and one NPO step with bf16 autocast over fp32 master weights: the loss (must be finite) and the peak
   GPU memory;
4. with two or more GPUs, `torchrun --nproc_per_node 2` of the same suite: every per-item value equal to the
   one-process run (the batches are dealt to ranks whole, so the numbers are the same).

The evaluation model runs in fp32 (TF32 off), so schedules differ only by the float rounding of other batch shapes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hf_unlearn.evaluation.runner import generate_answers  # noqa: E402
from hf_unlearn.evaluation.tofu import (  # noqa: E402
    TofuEvalArguments,
    evaluate_rows,
    load_eval_rows,
    plan_evaluation,
)
from hf_unlearn.runtime.io import atomic_write_json  # noqa: E402
from hf_unlearn.utils import rank_and_world  # noqa: E402

RESULT = REPO / "benchmarks" / "results" / "gpu_check.json"
FULL = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "heads": 32, "kv_heads": 8}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "heads": 4, "kv_heads": 2}


def default_data_dir() -> Path:
    shared = REPO.parent / "shared" / "tofu"
    return shared if (shared / "forget05.jsonl").exists() else REPO / "tests" / "fixtures" / "tofu"


def load_tokenizer(path: str | None):
    if path:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
    else:
        sys.path.insert(0, str(REPO / "tests"))
        from tofu_helpers import make_tokenizer

        tokenizer = make_tokenizer()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def make_model(tokenizer, shape: dict, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate_size"],
        num_hidden_layers=shape["num_hidden_layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def eval_args(cli) -> TofuEvalArguments:
    return TofuEvalArguments.preset(
        "reference", forget_split="forget05", max_items=cli.max_items, max_new_tokens=cli.max_new_tokens
    )


class CountingTokenizer:
    """The tokenizer, counting the new tokens `generate_answers` decodes (up to the first stop token)."""

    def __init__(self, tokenizer):
        self._tokenizer, self.count = tokenizer, 0

    def decode(self, ids, *args, **kwargs):
        self.count += len(ids)
        return self._tokenizer.decode(ids, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def check_schedules(model, tokenizer, rows, cli, device) -> dict:
    """Every generation schedule on the prompts the suite generates for; texts compared with `generate`'s."""
    import importlib.util

    args = eval_args(cli)
    plan = plan_evaluation(rows, tokenizer, args)
    prompt_ids = sorted({item.prompt for split in ("forget", "retain") for item in plan.items.get(split, [])})
    prompts = [
        {"input_ids": plan.prompts[i].input_ids, "attention_mask": plan.prompts[i].attention_mask} for i in prompt_ids
    ]
    schedules = ["generate", "refill", "static_compile"]
    if importlib.util.find_spec("vllm") is not None and device.type == "cuda":
        schedules.append("vllm")
    out: dict = {"prompts": len(prompts), "schedules": {}}
    texts: dict[str, list[str]] = {}
    for schedule in schedules:
        use = prompts
        if schedule == "vllm":  # vLLM takes plain token lists: the prompts without the reference's inner mask
            use = [{"input_ids": p["input_ids"], "attention_mask": [1] * len(p["input_ids"])} for p in prompts]
        try:
            counting = CountingTokenizer(tokenizer)
            sync(device)
            tic = time.perf_counter()
            result = generate_answers(
                model,
                counting,
                use,
                batch_size=args.generation_batch_size or args.batch_size,
                max_new_tokens=cli.max_new_tokens,
                stop_token_ids=plan.stop_token_ids,
                pad_token_id=tokenizer.pad_token_id,
                schedule=schedule,
                show_progress=False,
            )
            sync(device)
            wall = time.perf_counter() - tic
        except Exception as error:  # recorded, not fatal: the other checks still run
            out["schedules"][schedule] = {"error": f"{type(error).__name__}: {error}"[:500]}
            continue
        texts[schedule] = result
        new_tokens = counting.count
        out["schedules"][schedule] = {
            "wall_s": round(wall, 3),
            "new_tokens": new_tokens,
            "tokens_per_s": round(new_tokens / wall, 1) if wall > 0 else None,
        }
    base = texts.get("generate")
    for schedule, result in texts.items():
        same = sum(a == b for a, b in zip(result, base or [], strict=False))
        out["schedules"][schedule]["identical_to_generate"] = same
        out["schedules"][schedule]["all_identical"] = base is not None and same == len(base)
    return out


def run_suite(model, tokenizer, rows, cli) -> dict:
    summary = evaluate_rows(model, tokenizer, eval_args(cli), rows, show_progress=False)
    return summary


def suite_values(summary: dict) -> dict:
    """The per-item values and the split-level numbers, for comparing two runs."""
    numbers = {k: v for k, v in summary.items() if isinstance(v, (int, float)) or v is None}
    return {"summary": numbers, "items": summary["items"]}


def train_step(method: str, tokenizer, rows, cli, device) -> dict:
    """One optimiser step of `method` with bf16 autocast over fp32 master weights."""
    from datasets import Dataset

    from hf_unlearn import IMUConfig, IMUTrainer, NPOConfig, NPOTrainer

    model = make_model(tokenizer, TINY if cli.dry_run else FULL, seed=1).to(device)  # fp32 master weights
    forget = Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in rows["forget"][:8]])
    retain = Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in rows["retain"][:8]])
    common = {
        "output_dir": tempfile.mkdtemp(prefix=f"gpu_check_{method}_"),
        "per_device_train_batch_size": 4,
        "max_steps": 1,
        "bf16": True,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "use_cpu": device.type == "cpu",
        "logging_steps": 1,
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if method == "IMU":
        trainer = IMUTrainer(model, IMUConfig(**common), forget_dataset=forget, processing_class=tokenizer)
    else:
        trainer = NPOTrainer(
            model,
            NPOConfig(**common),
            forget_dataset=forget,
            retain_dataset=retain,
            processing_class=tokenizer,
        )
    sync(device)
    tic = time.perf_counter()
    trainer.train()
    sync(device)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    master = {str(p.dtype) for p in model.parameters()}
    return {
        "loss": losses[-1] if losses else None,
        "loss_finite": bool(losses) and all(math.isfinite(x) for x in losses),
        "wall_s": round(time.perf_counter() - tic, 3),
        "master_weight_dtypes": sorted(master),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None,
    }


def worker(cli) -> None:
    """One rank of the two-process suite (under torchrun): writes the values on rank 0."""
    import torch.distributed as dist

    rank = int(os.environ["LOCAL_RANK"])
    device = torch.device("cuda", rank) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    tokenizer = load_tokenizer(cli.tokenizer)
    model = make_model(tokenizer, TINY if cli.dry_run else FULL).to(device).eval()
    rows = load_eval_rows("forget05", cli.data_dir, eval_args(cli).item_limit)
    summary = run_suite(model, tokenizer, rows, cli)
    if rank_and_world()[0] == 0:
        Path(cli.worker_out).write_text(json.dumps(suite_values(summary), default=str))
    dist.destroy_process_group()


def two_process_check(cli, one_process: dict) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "two.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", __file__, "--worker-out"]
        command += [str(out), "--data-dir", str(cli.data_dir), "--max-items", str(cli.max_items)]
        command += ["--max-new-tokens", str(cli.max_new_tokens)] + (["--dry-run"] if cli.dry_run else [])
        command += ["--tokenizer", cli.tokenizer] if cli.tokenizer else []
        tic = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            return {"error": done.stderr[-2000:]}
        two = json.loads(out.read_text())
    same_items = json.dumps(two["items"], sort_keys=True) == json.dumps(
        one_process["items"], sort_keys=True, default=str
    )
    return {"wall_s": round(time.perf_counter() - tic, 3), "items_equal": same_items}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model: checks the script, times nothing")
    parser.add_argument("--output", default=None, help=f"result JSON (default {RESULT.relative_to(REPO)})")
    parser.add_argument("--tokenizer", default=None, help="local tokenizer folder (default: the test fixtures' BPE)")
    parser.add_argument("--data-dir", default=None, help="TOFU JSON lines folder")
    parser.add_argument("--max-items", type=int, default=None, help="items per split (default 64; dry run 3)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 200; dry run 8")
    parser.add_argument("--two-process", action="store_true", help="run the torchrun check even without 2 GPUs")
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    cli = parser.parse_args()
    cli.data_dir = str(cli.data_dir or default_data_dir())
    cli.max_items = cli.max_items or (3 if cli.dry_run else 64)
    cli.max_new_tokens = cli.max_new_tokens or (8 if cli.dry_run else 200)
    if cli.worker_out:
        worker(cli)
        return
    if not cli.dry_run and not torch.cuda.is_available():
        raise SystemExit("No GPU: run with --dry-run for the CPU check of the script.")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda" if not cli.dry_run else "cpu")
    started = time.perf_counter()
    tokenizer = load_tokenizer(cli.tokenizer)
    model = make_model(tokenizer, TINY if cli.dry_run else FULL).to(device).eval()
    rows = load_eval_rows("forget05", cli.data_dir, eval_args(cli).item_limit)
    result: dict = {
        "dry_run": cli.dry_run,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
        "gpus": torch.cuda.device_count(),
        "torch": torch.__version__,
        "model": {
            "architecture": "LlamaForCausalLM (random init)",
            "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer),
            "tokenizer": cli.tokenizer or "tests/tofu_helpers.make_tokenizer (fixture BPE)",
        },
        "settings": {
            "data_dir": cli.data_dir,
            "items_per_split": {split: len(r) for split, r in rows.items()},
            "max_new_tokens": cli.max_new_tokens,
            "eval_dtype": "float32 (TF32 off)",
        },
    }
    result["generation"] = check_schedules(model, tokenizer, rows, cli, device)
    tic = time.perf_counter()
    summary = run_suite(model, tokenizer, rows, cli)
    result["suite"] = {"wall_s": round(time.perf_counter() - tic, 3), "timing_s": summary["timing_s"]}
    one_process = json.loads(json.dumps(suite_values(summary), default=str))
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    result["training"] = {method: train_step(method, tokenizer, rows, cli, device) for method in ("IMU", "NPO")}
    if torch.cuda.device_count() >= 2 or cli.two_process:
        result["two_process"] = two_process_check(cli, one_process)
    else:
        result["two_process"] = {"skipped": "fewer than two GPUs"}
    result["checks"] = {
        "schedules_identical": all(
            s.get("all_identical", False) for s in result["generation"]["schedules"].values() if "error" not in s
        ),
        "losses_finite": all(t["loss_finite"] for t in result["training"].values()),
        "two_process_equal": result["two_process"].get("items_equal"),
    }
    result["total_wall_s"] = round(time.perf_counter() - started, 1)
    output = Path(cli.output) if cli.output else RESULT
    atomic_write_json(output, result)
    print(json.dumps(result["checks"]))
    print(f"Results: {output}")


if __name__ == "__main__":
    main()
