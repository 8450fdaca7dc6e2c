"""Relearning attack: fine-tune the unlearned model on a little data and score it at checkpoints.

The protocol follows the relearning studies of unlearned LLMs (docs/attacks.md): a seeded subset of the forget set
(scored only on the forget items outside it), related but different text, or unrelated text; AdamW at lr 1e-5 (the
SimNPO relearning setting), 10 % warm-up, then linear decay; checkpoints of one run at 0/10/25/50/100 steps; full
fine-tuning or LoRA. The training is `transformers.Trainer`'s own loop.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .record import AttackRecord

__all__ = ["RelearnArguments", "relearn", "relearn_split"]


@dataclass
class RelearnArguments:
    """Settings of a relearning attack.

    Parameters:
        steps (`list[int]`, defaults to `[0, 10, 25, 50, 100]`):
            Optimizer steps at which the model is scored (0: before any step); the run lasts `max(steps)` steps.
        learning_rate (`float`, defaults to `1e-5`):
            AdamW learning rate (the SimNPO relearning setting).
        batch_size (`int`, defaults to `4`):
            Rows per optimizer step.
        warmup_ratio (`float`, defaults to `0.1`):
            Share of the steps with a linear warm-up.
        lr_scheduler_type (`str`, defaults to `"linear"`):
            transformers scheduler after the warm-up.
        weight_decay (`float`, defaults to `0.0`):
            AdamW weight decay.
        lora (`dict` or `None`, defaults to `None`):
            `peft.LoraConfig` fields to relearn through a LoRA adapter (merged afterwards); None: full fine-tuning.
        seed (`int`, defaults to `0`):
            Seed of the data order.
    """

    steps: list[int] = field(default_factory=lambda: [0, 10, 25, 50, 100], metadata={"help": "Scored steps."})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate."})
    batch_size: int = field(default=4, metadata={"help": "Rows per optimizer step."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of steps warming up."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "Scheduler after the warm-up."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    lora: dict[str, Any] | None = field(default=None, metadata={"help": "LoraConfig fields; None: full fine-tuning."})
    seed: int = field(default=0, metadata={"help": "Seed of the data order."})

    def __post_init__(self) -> None:
        self.steps = sorted({int(step) for step in self.steps})
        if not self.steps or self.steps[0] < 0:
            raise ValueError(f"steps must be non-negative step counts, got {self.steps}.")
        if self.learning_rate < 0:
            raise ValueError(f"learning_rate must be >= 0, got {self.learning_rate}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")


def relearn_split(num_rows: int, size: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """A seeded subset of `size` row indices to relearn on, and the other rows (the ones to score): the attack counts
    only knowledge that comes back on items it did not train on."""
    if not 0 < size < num_rows:
        raise ValueError(f"the relearning subset needs 0 < size < {num_rows} rows, got {size}.")
    order = np.random.default_rng(seed).permutation(num_rows)
    return sorted(order[:size].tolist()), sorted(order[size:].tolist())


def relearn(
    model,
    dataset,
    evaluate: Callable[[Any], dict[str, float | None]],
    args: RelearnArguments | None = None,
    data_collator: Callable | None = None,
    name: str = "relearn",
):
    """Fine-tune a copy of `model` on `dataset` (rows with `input_ids`, `labels`) by next-token NLL and score it with
    `evaluate(model) -> metrics` at each of `args.steps`; `model` itself is left as it was.

    Returns `(attacked_model, record)`; `record.details["checkpoints"]` is `[{"step": s, **metrics}, ...]`.
    """
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    args = args or RelearnArguments()
    attacked = copy.deepcopy(model)
    if args.lora is not None:
        from peft import LoraConfig, get_peft_model

        attacked = get_peft_model(attacked, LoraConfig(**args.lora))
    checkpoints: list[dict[str, Any]] = []
    scored = set(args.steps)

    class _Checkpoints(TrainerCallback):
        def on_train_begin(self, train_args, state, control, model=None, **kwargs):
            if 0 in scored:
                checkpoints.append({"step": 0, **evaluate(model)})

        def on_step_end(self, train_args, state, control, model=None, **kwargs):
            if state.global_step in scored:
                checkpoints.append({"step": state.global_step, **evaluate(model)})

    max_steps = args.steps[-1]
    tick = time.perf_counter()
    if max_steps == 0:
        checkpoints.append({"step": 0, **evaluate(attacked)})
    else:
        with tempfile.TemporaryDirectory(prefix="hf_unlearn_relearn_") as scratch:
            training = TrainingArguments(
                output_dir=scratch,
                max_steps=max_steps,
                per_device_train_batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                lr_scheduler_type=args.lr_scheduler_type,
                warmup_steps=round(args.warmup_ratio * max_steps),
                weight_decay=args.weight_decay,
                optim="adamw_torch",
                seed=args.seed,
                data_seed=args.seed,
                save_strategy="no",
                logging_strategy="no",
                report_to="none",
                disable_tqdm=True,
                remove_unused_columns=False,
                dataloader_pin_memory=torch.cuda.is_available(),
            )
            trainer = Trainer(
                model=attacked,
                args=training,
                train_dataset=dataset,
                data_collator=data_collator,
                callbacks=[_Checkpoints()],
            )
            trainer.train()
    if args.lora is not None:
        attacked = attacked.merge_and_unload()
    attacked.eval()
    record = AttackRecord(
        name,
        settings={
            "rows": len(dataset),
            "steps": args.steps,
            "learning_rate": args.learning_rate,
            "batch_size": args.batch_size,
            "warmup_ratio": args.warmup_ratio,
            "lr_scheduler_type": args.lr_scheduler_type,
            "weight_decay": args.weight_decay,
            "trainable": "lora" if args.lora is not None else "full",
            "seed": args.seed,
        },
        details={"checkpoints": checkpoints, "seconds": time.perf_counter() - tick},
    )
    return attacked, record
