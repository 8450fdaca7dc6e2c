"""`hf-unlearn eval --lm-eval-tasks ...`: lm-eval tasks on a model folder, Hub id or a PEFT adapter folder (loaded on
its base model), `lm_eval.json` in the output folder and a table on the terminal."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .lm_eval import LmEvalArguments, evaluate_lm_eval

__all__ = ["format_lm_eval_table", "run_lm_eval_command"]


def format_lm_eval_table(scores: dict[str, dict[str, float]]) -> str:
    """One row per task: accuracy (and normalised accuracy where lm-eval gives it), in %."""
    lines = ["| task | acc | acc_norm |", "|---|---|---|"]
    for task, values in scores.items():
        cells = [f"{100 * values[key]:.1f}" if key in values else "–" for key in ("acc", "acc_norm")]
        lines.append(f"| {task} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def _load(command: Any):
    from ..models import ensure_pad_token, load_model_and_tokenizer

    adapter = Path(command.model) / "adapter_config.json"
    if adapter.is_file():  # an unlearned adapter: its base model with the adapter applied
        from peft import PeftModel

        base = json.loads(adapter.read_text())["base_model_name_or_path"]
        model, tokenizer = load_model_and_tokenizer(base, dtype=command.dtype, device=command.device)
        model = PeftModel.from_pretrained(model, command.model)
    else:
        model, tokenizer = load_model_and_tokenizer(
            command.model,
            gguf_file=command.gguf_file,
            dtype=command.dtype,
            trust_remote_code=command.trust_remote_code,
            device=command.device,
        )
    ensure_pad_token(tokenizer, pad_with_eos=True)
    return model, tokenizer


def run_lm_eval_command(command: Any) -> int:
    args = LmEvalArguments(
        tasks=command.lm_eval_tasks, include_path=command.lm_eval_include_path, limit=command.lm_eval_limit
    )
    model, tokenizer = _load(command)
    scores = evaluate_lm_eval(model, tokenizer, args)
    out = Path(command.output_dir) / "lm_eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")  # written whole, then renamed: never half a file
    partial.write_text(json.dumps({"model": command.model, "settings": args.settings(), "scores": scores}, indent=1))
    partial.replace(out)
    print(format_lm_eval_table(scores))
    print(f"Results: {os.path.join(command.output_dir, 'lm_eval.json')}")
    return 0
