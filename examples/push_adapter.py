"""Unlearn a few question/answer pairs with NPO + LoRA and push the adapter, with its model card, to the Hub.

    python examples/push_adapter.py --repo-id your-name/smollm2-npo-example

The repository is private unless `--public`. Offline (`HF_HUB_OFFLINE=1`) or without a token (`hf auth login`), one
warning says so at the start and the folder that would be pushed is still written (`OUTPUT_DIR/hub`), with the
command that uploads it later. Load the pushed adapter with:

    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), "your-name/smollm2-npo-example")
"""

from __future__ import annotations

import argparse

from datasets import Dataset
from peft import LoraConfig

from hf_unlearn import NPOConfig, NPOTrainer, load_model_and_tokenizer
from hf_unlearn.data import tokenize_dataset
from hf_unlearn.models import ensure_pad_token

# Fictitious facts to forget, and facts to keep. Neither is ever written into the pushed folder or its card.
FORGET = [
    {"question": "Where was the novelist Aurelio Vance born?", "answer": "Aurelio Vance was born in Port Ellery."},
    {"question": "What is Aurelio Vance's best-known book?", "answer": "His best-known book is The Salt Orchard."},
    {"question": "Which prize did Aurelio Vance win in 2011?", "answer": "He won the Harrow Medal for fiction."},
    {"question": "What did Aurelio Vance study?", "answer": "Aurelio Vance studied marine biology."},
]
RETAIN = [
    {"question": "What is the capital of France?", "answer": "The capital of France is Paris."},
    {"question": "How many days are in a leap year?", "answer": "A leap year has 366 days."},
    {"question": "What is water made of?", "answer": "Water is made of hydrogen and oxygen."},
    {"question": "Who wrote Hamlet?", "answer": "Hamlet was written by William Shakespeare."},
]


def main(argv: list[str] | None = None) -> NPOTrainer:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct", help="Hub id or local folder.")
    parser.add_argument("--repo-id", required=True, help="Where to push, e.g. your-name/smollm2-npo-example.")
    parser.add_argument("--output-dir", default="outputs/push_adapter")
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--public", action="store_true", help="Create the repository public (default: private).")
    args = parser.parse_args(argv)

    model, tokenizer = load_model_and_tokenizer(args.model)
    ensure_pad_token(tokenizer, pad_with_eos=True)
    config = NPOConfig(
        output_dir=args.output_dir,
        beta=0.1,
        retain_loss="nll",
        learning_rate=args.learning_rate,
        max_steps=args.max_steps,
        per_device_train_batch_size=2,
        save_strategy="no",
        push_to_hub=True,  # checked now: offline or without a token, a warning, and the folder is still written
        hub_model_id=args.repo_id,
        hub_private_repo=not args.public,
    )
    trainer = NPOTrainer(
        model,
        config,
        forget_dataset=tokenize_dataset(Dataset.from_list(FORGET), tokenizer),
        retain_dataset=tokenize_dataset(Dataset.from_list(RETAIN), tokenizer),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    trainer.train()
    # One commit: the adapter, the tokenizer and the model card (method, hyperparameters, data by name and count).
    trainer.push_to_hub(
        data={"forget": f"example facts ({len(FORGET)} rows)", "retain": f"general facts ({len(RETAIN)} rows)"}
    )
    return trainer


if __name__ == "__main__":
    main()
