"""Unlearn your own question/answer data with NPO and a LoRA adapter.

The forget and retain files are JSON Lines with `question` and `answer` fields (TRL `messages` or prompt/completion
rows work as well); the trainer renders them with the model's chat template and puts the labels on the answers only.
Every `NPOConfig` / `TrainingArguments` field is a flag:

    python examples/npo_lora_qa.py --model_name_or_path HuggingFaceTB/SmolLM2-135M-Instruct \
        --forget_file my_forget.jsonl --retain_file my_retain.jsonl --output_dir npo-lora --num_train_epochs 5

The output folder is a standard PEFT adapter: `PeftModel.from_pretrained(base_model, "npo-lora")`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from datasets import load_dataset
from peft import LoraConfig
from transformers import HfArgumentParser

from hf_unlearn import NPOConfig, NPOTrainer

DATA = Path(__file__).parent / "data"


@dataclass
class ScriptArguments:
    model_name_or_path: str = field(default="HuggingFaceTB/SmolLM2-135M-Instruct", metadata={"help": "Hub id or path."})
    forget_file: str = field(default=str(DATA / "forget.jsonl"), metadata={"help": "JSON Lines to forget."})
    retain_file: str = field(default=str(DATA / "retain.jsonl"), metadata={"help": "JSON Lines to keep."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "LoRA target modules."})


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = HfArgumentParser((ScriptArguments, NPOConfig))
    parser.set_defaults(output_dir="npo-lora", learning_rate=1e-4, num_train_epochs=5, logging_steps=1)
    script, args = parser.parse_args_into_dataclasses(argv)
    forget = load_dataset("json", data_files=script.forget_file, split="train")
    retain = load_dataset("json", data_files=script.retain_file, split="train")
    lora = LoraConfig(r=script.lora_r, lora_alpha=2 * script.lora_r, target_modules=script.lora_target_modules)
    trainer = NPOTrainer(
        script.model_name_or_path,  # loaded with its tokenizer; or pass a model and processing_class=
        args,
        forget_dataset=forget,
        retain_dataset=retain,
        peft_config=lora,
    )
    before = trainer.evaluate()  # eval_forget_loss / eval_retain_loss on the forget and retain sets
    trainer.train()
    after = trainer.evaluate()
    trainer.save_model(args.output_dir)  # the adapter only
    for name in ("eval_forget_loss", "eval_retain_loss"):
        print(f"{name}: {before[name]:.3f} -> {after[name]:.3f}")
    print(f"Adapter saved to {args.output_dir}")
    return after


if __name__ == "__main__":
    main()
