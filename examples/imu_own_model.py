"""Unlearn with IMU on your own model: influence-weighted gradient ascent that moves the LM head only.

IMU first scores every forget example by its influence on the head (one pass over the forget set), keeps the
examples with positive scores, and weights their ascent by those scores; no retain data is needed. The model is any
causal LM folder or Hub id (`--model_name_or_path ./my-finetuned-model`):

    python examples/imu_own_model.py --model_name_or_path ./my-model --forget_file my_forget.jsonl \
        --output_dir imu-model --learning_rate 1e-3 --num_train_epochs 5

The output folder is a full model (`AutoModelForCausalLM.from_pretrained("imu-model")`) whose weights differ from
the input's in the LM head only; `influence_scores.safetensors` beside it holds the scores and weights (indices only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from datasets import load_dataset
from transformers import HfArgumentParser

from hf_unlearn import IMUConfig, IMUTrainer

DATA = Path(__file__).parent / "data"


@dataclass
class ScriptArguments:
    model_name_or_path: str = field(default="HuggingFaceTB/SmolLM2-135M-Instruct", metadata={"help": "Hub id or path."})
    forget_file: str = field(default=str(DATA / "forget.jsonl"), metadata={"help": "JSON Lines to forget."})
    retain_file: str | None = field(
        default=str(DATA / "retain.jsonl"), metadata={"help": "JSON Lines to check (evaluation only)."}
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = HfArgumentParser((ScriptArguments, IMUConfig))
    parser.set_defaults(output_dir="imu-model", learning_rate=1e-3, num_train_epochs=5, logging_steps=1)
    script, args = parser.parse_args_into_dataclasses(argv)
    forget = load_dataset("json", data_files=script.forget_file, split="train")
    retain = load_dataset("json", data_files=script.retain_file, split="train") if script.retain_file else None
    # retain_loss="none" (IMU's default): the retain set is only evaluated, never trained on.
    trainer = IMUTrainer(script.model_name_or_path, args, forget_dataset=forget, retain_dataset=retain)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    kept = int((trainer.sample_weights > 0).sum())
    print(
        f"IMU kept {kept} of {len(forget)} forget examples (positive influence); max weight {trainer.sample_weights.max():.3f}"
    )
    for name in after:
        if name.endswith("_loss"):
            print(f"{name}: {before[name]:.3f} -> {after[name]:.3f}")
    trainer.save_model(args.output_dir)
    print(f"Model saved to {args.output_dir}")
    return after


if __name__ == "__main__":
    main()
