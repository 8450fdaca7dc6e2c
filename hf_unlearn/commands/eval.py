"""`hf-unlearn eval`: the TOFU evaluation suite on a model from the Hub, a local folder or a GGUF file.

    hf-unlearn eval --model PATH_OR_ID [--gguf-file F] [--data-dir DIR] --forget-split forget05 --output-dir DIR \\
        [--retain-results DIR_OR_FILE] [--max-items N]

Runs on several processes with `torchrun --nproc_per_node N -m hf_unlearn.cli eval ...` (or `accelerate launch`).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

__all__ = ["register", "run_eval", "format_summary_table"]

# Printed in this order; model-utility components indented under it.
_MAIN = ["forget_quality", "model_utility", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio",
         "extraction_strength", "exact_memorization", "mia_min_k", "privleak", "mia_loss", "mia_zlib"]  # fmt: skip
_COMPONENTS = ["retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio", "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE",
               "ra_Truth_Ratio", "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio"]  # fmt: skip


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("eval", help="Evaluate a model on TOFU (SPEC §3 metrics).", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--model", required=True, help="Hub id or local folder (with --gguf-file: the folder of the GGUF file).")
    parser.add_argument("--gguf-file", help="GGUF file inside --model; dequantized to a plain model.")
    parser.add_argument("--data-dir", help="Local folder of TOFU JSON(L) files (default: locuslab/TOFU from the Hub).")
    parser.add_argument("--forget-split", default="forget05", help="forget01, forget05 or forget10 (default forget05).")
    parser.add_argument("--output-dir", required=True, help="Where summary.json and items.json are written.")
    parser.add_argument("--retain-results", help="Retain-model evaluation (output dir, summary.json or open-unlearning "
                                                 "TOFU_EVAL.json): enables forget_quality and the privleak reference.")  # fmt: skip
    parser.add_argument("--max-items", type=int, help="Evaluate the first N items of every split only (quick look).")
    parser.add_argument("--batch-size", type=int, default=16, help="Sequences per forward pass (default 16).")
    parser.add_argument("--generation-batch-size", type=int, help="Prompts per generate call (default: --batch-size).")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="Greedy generation budget for ROUGE (default 200).")
    parser.add_argument("--no-rouge", action="store_true", help="Skip generation (no ROUGE, no model_utility).")
    parser.add_argument("--dtype", help="float32, bfloat16, float16 or auto (default: transformers' default).")
    parser.add_argument("--device", help="Device for the model (default: cuda:LOCAL_RANK if available, else cpu).")
    parser.add_argument("--pad-with-eos", action="store_true", help="Use eos as pad token when the tokenizer has none.")
    parser.add_argument("--system-prompt", default=None, help='System prompt (default "You are a helpful assistant.").')
    parser.add_argument("--no-system-prompt", action="store_true", help="No system turn.")
    parser.add_argument("--date-string", default=None, help='Chat-template date_string (default "10 Apr 2025").')
    parser.add_argument("--no-chat-template", action="store_true", help="Plain 'Question: ... Answer: ...' formatting.")
    parser.add_argument("--reference-attention-mask", action="store_true",
                        help="Reference parity: attention mask = input_ids != pad (hides end-of-turn tokens when pad = eos).")
    parser.add_argument("--no-es-floor", action="store_true",
                        help="Extraction strength 0 (not the reference's 1/n) when no suffix matches.")
    parser.add_argument("--recompute", action="store_true", help="Never reuse previous results in --output-dir.")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    parser.set_defaults(func=run_eval)


def _init_distributed() -> str | None:
    """Join the process group that torchrun / accelerate launch set up; returns the device for this process."""
    import torch

    from ..utils import join_process_group

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return None
    return join_process_group()


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from ..evaluation.tofu import tofu_split_configs

    tofu_split_configs(args.forget_split)  # fail on a bad split before loading a model
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise FileNotFoundError(f"--data-dir {args.data_dir!r} does not exist.")
    started_group = _init_distributed()
    try:
        return _evaluate(args, args.device or started_group)
    finally:
        if started_group is not None and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _evaluate(args: argparse.Namespace, device: str | None) -> int:
    from ..data.tofu import DEFAULT_DATE_STRING, DEFAULT_SYSTEM_PROMPT
    from ..evaluation.runner import dist_info
    from ..evaluation.tofu import evaluate_tofu
    from ..models import ensure_pad_token, load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(args.model, gguf_file=args.gguf_file, dtype=args.dtype,
                                                trust_remote_code=args.trust_remote_code, device=device)  # fmt: skip
    ensure_pad_token(tokenizer, pad_with_eos=args.pad_with_eos)
    model_name = args.model if args.gguf_file is None else os.path.join(args.model, args.gguf_file)
    summary = evaluate_tofu(
        model, tokenizer, forget_split=args.forget_split, data_dir=args.data_dir, retain_logs=args.retain_results,
        output_dir=args.output_dir, batch_size=args.batch_size, generation_batch_size=args.generation_batch_size,
        max_new_tokens=args.max_new_tokens, max_items=args.max_items, compute_rouge=not args.no_rouge,
        system_prompt=None if args.no_system_prompt else (args.system_prompt or DEFAULT_SYSTEM_PROMPT),
        template_kwargs={"date_string": args.date_string or DEFAULT_DATE_STRING},
        use_chat_template=False if args.no_chat_template else None,
        reference_attention_mask=args.reference_attention_mask, es_reference_floor=not args.no_es_floor,
        model_name=model_name, reuse=not args.recompute, show_progress=not args.quiet,
    )  # fmt: skip
    if dist_info()[0] == 0:
        print(format_summary_table(summary))
        print(f"Results: {os.path.join(args.output_dir, 'summary.json')}" + (" (reused)" if summary.get("reused") else ""))
    return 0


def format_summary_table(summary: dict[str, Any]) -> str:
    """The aggregate metrics as an aligned two-column table (numbers only: no forget-set text)."""

    def fmt(value: Any) -> str:
        if value is None:
            return "None"
        if isinstance(value, float) and value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
            return f"{value:.3e}"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = [f"{'metric':<28} value", "-" * 40]
    for name in _MAIN:
        if name in summary:
            lines.append(f"{name:<28} {fmt(summary[name])}")
            if name == "model_utility":
                lines += [f"  {c:<26} {fmt(summary.get(c))}" for c in _COMPONENTS if c in summary]
    timing = summary.get("timing_s", {})
    if "total" in timing:
        lines.append(f"{'wall time (s)':<28} {timing['total']:.1f}")
    return "\n".join(lines)
