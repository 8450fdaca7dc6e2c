"""Unlearn a TOFU forget split with NPO, evaluate TOFU metrics every few steps, and keep the best checkpoint.

`TofuEvalCallback` adds the TOFU metrics (teacher-forced only here: no generation) to every evaluation, so
`metric_for_best_model` can pick the checkpoint by a TOFU metric, or by a combined `score` (default: retain answer
probability minus forget answer probability). `StopAtTargetCallback` stops once the forget answers are unlikely enough;
`CollapseGuardCallback` stops, with a warning, if the retain loss runs away.

    python examples/eval_callback_best_checkpoint.py --model_name_or_path ./tofu-finetuned-model \
        --forget_split forget05 --output_dir npo-tofu --eval_steps 10 --save_steps 10 --max_steps 50
    # with a retain-model evaluation (hf-unlearn eval ... --output-dir retain-eval), select by forget quality:
    #   ... --retain_logs retain-eval --metric_for_best_model forget_quality

Without `--tofu_dir` the data comes from the Hub (`locuslab/TOFU`). Every evaluation is kept small by default so
the example runs in minutes: the first `--max_eval_items` (20) items of each TOFU split and as many forget and retain
rows for the trainer's own losses. Raise it (or pass `--max_eval_items -1` for everything) for a real selection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hf_unlearn import NPOConfig, NPOTrainer, TofuEvalArguments, TofuEvalCallback, TofuFormat, load_tofu
from hf_unlearn.callbacks import CollapseGuardCallback, StopAtTargetCallback


@dataclass
class ScriptArguments:
    model_name_or_path: str = field(metadata={"help": "A model fine-tuned on TOFU (Hub id or folder)."})
    tofu_dir: str | None = field(default=None, metadata={"help": "Local TOFU JSON(L) folder (default: the Hub)."})
    forget_split: str = field(default="forget05", metadata={"help": "forget01, forget05 or forget10."})
    retain_logs: str | None = field(default=None, metadata={"help": "Retain-model evaluation (gives forget_quality)."})
    max_eval_items: int = field(
        default=20, metadata={"help": "Items per TOFU split, and forget/retain rows, at each evaluation (-1: all)."}
    )
    target: str = field(default="forget_Q_A_Prob <= 0.05", metadata={"help": "Stop when this holds."})
    collapse: str = field(default="eval_retain_loss > 2x", metadata={"help": "Stop with a warning when this holds."})


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = HfArgumentParser((ScriptArguments, NPOConfig))
    parser.set_defaults(
        output_dir="npo-tofu",
        learning_rate=1e-5,
        max_steps=50,
        logging_steps=5,
        eval_strategy="steps",
        eval_steps=10,
        save_strategy="steps",
        save_steps=10,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="score",
        greater_is_better=True,
    )
    script, args = parser.parse_args_into_dataclasses(argv)
    tofu_format = TofuFormat()  # the TOFU formatting (system prompt, date), for training and evaluation alike
    if args.dataset_kwargs is None:
        args.dataset_kwargs = tofu_format.chat_format().kwargs()
    forget = load_tofu(script.forget_split, script.tofu_dir)
    retain = load_tofu("retain_perturbed", script.tofu_dir).select_columns(["question", "answer"])
    limit = None if script.max_eval_items < 0 else script.max_eval_items
    first = lambda data: data if limit is None else data.select(range(min(limit, len(data))))
    tofu = TofuEvalCallback(
        TofuEvalArguments(
            **tofu_format.formatting(),
            forget_split=script.forget_split,
            compute_rouge=False,  # teacher-forced metrics only: cheap enough to run often
            max_items=limit,
        ),
        data_dir=script.tofu_dir,
        retain_logs=script.retain_logs,
        score=lambda m: m["retain_Q_A_Prob"] - m["forget_Q_A_Prob"],
    )
    trainer = NPOTrainer(
        script.model_name_or_path,
        args,
        forget_dataset=forget,
        retain_dataset=retain,
        eval_dataset={"forget": first(forget), "retain": first(retain)},  # the trainer's losses on a few rows only
        callbacks=[tofu, StopAtTargetCallback(script.target), CollapseGuardCallback(script.collapse)],
    )
    trainer.train()
    for entry in tofu.history:
        print(
            f"step {entry['step']:>4}: forget prob {entry['forget_Q_A_Prob']:.4f}, retain prob "
            f"{entry['retain_Q_A_Prob']:.4f}, score {entry['score']:.4f}"
            + (f", forget quality {entry['forget_quality']:.3g}" if "forget_quality" in entry else "")
        )
    print(f"Best checkpoint ({args.metric_for_best_model}): {trainer.state.best_model_checkpoint}, now loaded.")
    final = trainer.evaluate()
    trainer.save_model(args.output_dir)
    return final


if __name__ == "__main__":
    main()
