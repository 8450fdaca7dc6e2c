"""`hf-unlearn eval`: the TOFU evaluation suite on a model from the Hub, a local folder or a GGUF file.

    hf-unlearn eval --model PATH_OR_ID [--gguf-file F] [--data-dir DIR] --forget-split forget05 --output-dir DIR \\
        [--retain-results DIR_OR_FILE] [--max-items N]

Every option of `TofuEvalArguments` is a flag (`--max-new-tokens`, `--no-compute-rouge`, `--system-prompt ""` for no
system turn, `--reference-attention-mask`, ...). `--reference-labels` scores the reference evaluator's label tokens
(`--label-convention reference`); `--preset reference` sets every reference convention (labels, attention mask,
extraction-strength floor) and `--preset teacher_forced_only` skips generation; a preset sets only the options still
at their defaults. Runs on several processes with
`torchrun --nproc_per_node N -m hf_unlearn.cli eval ...` (or `accelerate launch`).

`--lm-eval-tasks wmdp_bio,mmlu` runs those lm-eval tasks instead (the `lm-eval` extra; `--lm-eval-include-path DIR`
adds local task YAML files) and writes `lm_eval.json` into --output-dir.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EvalCommandArguments", "build_parser", "main"]


@dataclass
class EvalCommandArguments:
    """Where the model, the data and the results are (`TofuEvalArguments` says what is computed)."""

    model: str = field(metadata={"help": "Hub id or local folder (with --gguf-file: the folder of the GGUF file)."})
    output_dir: str = field(
        metadata={"help": "Where summary.json and items.json are written (a new folder, or an earlier evaluation's)."}
    )
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file inside --model; dequantized to fp32."})
    data_dir: str | None = field(default=None, metadata={"help": "Local TOFU JSON(L) folder (default: the Hub)."})
    retain_results: str | None = field(
        default=None,
        metadata={
            "help": "Retain-model evaluation (output dir, summary.json or open-unlearning TOFU_EVAL.json): enables "
            "forget_quality and the privleak reference."
        },
    )
    dtype: str | None = field(default=None, metadata={"help": "float32, bfloat16, float16 or auto."})
    device: str | None = field(default=None, metadata={"help": "Device (default: this process's GPU, else the CPU)."})
    pad_with_eos: bool = field(
        default=True,
        metadata={
            "help": "Pad with the eos token when the tokenizer has none, as `hf-unlearn run` does (said in one line; "
            "--no-pad-with-eos refuses such a tokenizer instead)."
        },
    )
    recompute: bool = field(default=False, metadata={"help": "Never reuse previous results in --output-dir."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the model repository's own code."})
    quiet: bool = field(default=False, metadata={"help": "No progress bars."})
    reference_labels: bool = field(
        default=False, metadata={"help": "Score the reference's label tokens (same as --label-convention reference)."}
    )
    lm_eval_tasks: str | None = field(
        default=None, metadata={"help": "Comma-separated lm-eval tasks (wmdp_bio,mmlu): run them instead of TOFU."}
    )
    lm_eval_include_path: str | None = field(default=None, metadata={"help": "Folder of extra lm-eval task YAMLs."})
    lm_eval_limit: int | None = field(default=None, metadata={"help": "First N documents per lm-eval task."})
    preset: str | None = field(
        default=None,
        metadata={
            "help": "Named settings: 'reference' (labels, attention mask and ES floor of the reference evaluator) or "
            "'teacher_forced_only' (no generation). Sets only options left at their defaults.",
            "choices": ["reference", "teacher_forced_only"],
        },
    )


def build_parser(prog: str) -> argparse.ArgumentParser:
    from transformers import HfArgumentParser

    from ..evaluation.tofu import TofuEvalArguments

    return HfArgumentParser(
        (EvalCommandArguments, TofuEvalArguments),
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(args: argparse.Namespace) -> int:
    from ..evaluation.tofu import TofuEvalArguments

    command = EvalCommandArguments(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EvalCommandArguments)})
    eval_args = TofuEvalArguments(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TofuEvalArguments)})
    if command.lm_eval_tasks:
        from ..evaluation.lm_eval_cli import run_lm_eval_command

        return run_lm_eval_command(command)
    eval_args = _apply_presets(command, eval_args)
    if command.data_dir is not None and not os.path.isdir(command.data_dir):
        raise FileNotFoundError(f"--data-dir {command.data_dir!r} does not exist.")
    from ..models import check_model_source
    from ..tasks.tofu.eval_stage import check_stage_folder

    check_stage_folder(Path(command.output_dir))  # before the model loads
    check_model_source(command.model, command.gguf_file)  # a missing folder or model: one line, no Hub retries
    from ..runtime.distributed import is_main_process, join_process_group

    device = command.device or join_process_group()
    return _evaluate(command, eval_args, device, is_main_process)


def _apply_presets(command: EvalCommandArguments, eval_args):
    """`--preset` values for the options left at their defaults, then `--reference-labels`."""
    from ..evaluation.tofu import EVAL_PRESETS, TofuEvalArguments

    changes: dict[str, object] = {}
    if command.preset is not None:
        defaults = TofuEvalArguments()
        changes = {
            name: value
            for name, value in EVAL_PRESETS[command.preset].items()
            if getattr(eval_args, name) == getattr(defaults, name)
        }
    if command.reference_labels:
        changes["label_convention"] = "reference"
    return dataclasses.replace(eval_args, **changes) if changes else eval_args


def _evaluate(command: EvalCommandArguments, eval_args, device: str | None, is_main_process) -> int:
    from ..models import ensure_pad_token, load_model_and_tokenizer
    from ..tasks.tofu.eval_stage import evaluate_tofu_stage
    from ..tasks.tofu.report import format_summary_table

    model, tokenizer = load_model_and_tokenizer(
        command.model,
        gguf_file=command.gguf_file,
        dtype=command.dtype,
        trust_remote_code=command.trust_remote_code,
        device=device,
    )
    ensure_pad_token(tokenizer, pad_with_eos=command.pad_with_eos)
    model_name = command.model if command.gguf_file is None else os.path.join(command.model, command.gguf_file)
    summary = evaluate_tofu_stage(
        model,
        tokenizer,
        eval_args,
        data_dir=command.data_dir,
        retain_logs=command.retain_results,
        output_dir=command.output_dir,
        model_name=model_name,
        reuse=not command.recompute,
        show_progress=not command.quiet,
    )
    if is_main_process():
        print(format_summary_table(summary))
        reused = " (reused)" if summary.get("reused") else ""
        print(f"Results: {os.path.join(command.output_dir, 'summary.json')}{reused}")
    return 0
