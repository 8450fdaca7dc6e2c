"""Fine-tuning the TOFU target ("full") and retain models with TRL's `SFTTrainer`, cached per model.

The SFT rows are pre-tokenized with exactly the evaluation's formatting (`hf_unlearn.data.tokenize_dataset` with the
recipe's `formatting`: chat template, system prompt, `date_string`) into `input_ids` and a `completion_mask` that is 1 on the answer and the
end-of-turn token only. TRL (>= 0.20) treats a dataset with `input_ids` as pre-tokenized and, with
`completion_only_loss=True`, turns the mask into labels (-100 elsewhere); padding is labelled -100 by its collator.
So the model is trained on the answer + end-of-turn tokens, and later scored on the very same tokens.

Weights stay in fp32 (master weights); `bf16: true` in the recipe gives bf16 autocast compute (updating bf16 weights in
place loses most 1e-5 steps). With `finetune_lora`, a LoRA adapter is trained, saved (`adapter/`), and
merged into the saved model, so every later stage loads a plain model.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from datasets import Dataset

from ...data.chat import chat_format_notice, tokenize_dataset, truncation_notice
from ...data.tofu import TOFU_HUB_ID, TofuFormat, load_tofu
from ...hub import ModelCardInfo, hub_id_or_none, write_model_card
from ...models import ensure_pad_token, hub_snapshot, load_model_and_tokenizer, save_tokenizer
from ...runtime.cache import (
    StageLog,
    cached_stage,
    commit_stage,
    fingerprint_settings,
    open_scratch,
    resume_checkpoint,
)
from ...runtime.distributed import is_main_process, main_process_print, wait_for_everyone
from ...runtime.hashing import sha256_json
from ...runtime.io import atomic_write_json
from ...runtime.versions import environment_versions
from ...trainers.gradient_restriction_config import GradientRestriction
from ...utils import IGNORE_INDEX
from .data import describe_selections, select_rows, selections_json
from .recipe import ROLES, ModelSpec, TofuRecipe, build_lora_config, build_sft_config

__all__ = [
    "check_data_separation",
    "ensure_models",
    "fetch_hub_model",
    "finetune_model",
    "load_model",
    "public_name",
    "sft_dataset",
]


def load_model(spec: ModelSpec, device: str | None = None) -> tuple[Any, Any]:
    """Model (fp32 unless the spec says otherwise) and tokenizer, with a pad token (eos if it has none: padding is
    masked everywhere, so any id works), a PEFT adapter applied if the spec has one (merged into the weights with
    `merge_adapter`: a target or retain model given as an adapter is then a plain model, trained in full)."""
    model, tokenizer = load_model_and_tokenizer(
        spec.path, gguf_file=spec.gguf_file, dtype=spec.dtype, trust_remote_code=spec.trust_remote_code, device=device
    )
    ensure_pad_token(tokenizer, pad_with_eos=True)
    if spec.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, spec.adapter)
        if spec.merge_adapter:  # PEFT froze the base weights: a merged model is trainable as if loaded plain
            model = model.merge_and_unload().requires_grad_(True)
        model.eval()
    return model, tokenizer


def fetch_hub_model(spec: ModelSpec) -> None:
    """Download a Hub model's files (the current revision) before its identity enters a fingerprint, so that the
    fingerprint names the snapshot that is then loaded (a model not yet cached would otherwise key by its name alone,
    and by its files once cached: a needless recompute). A no-op for local folders and offline."""
    if not Path(spec.path).is_dir() and hub_id_or_none(spec.path) is not None:
        hub_snapshot(spec.path, spec.gguf_file, download=True)


def public_name(spec: ModelSpec) -> str:
    """A model as a model card may name it: a Hub id or `pkg:NAME` as given, a local folder by its name only (a card
    never carries the paths of the machine it was made on)."""
    name = spec.name_or_path
    if hub_id_or_none(name) is None and not name.startswith("pkg:"):
        name = Path(name).name
    return name + (f" ({spec.gguf_file})" if spec.gguf_file else "")


def sft_dataset(rows: Dataset, tokenizer: Any, formatting: TofuFormat) -> Dataset:
    """Pre-tokenized SFT rows: `input_ids` and `completion_mask` (1 on answer + end-of-turn tokens).

    The attention mask is left to TRL's collator (all ones): the reference's mask quirk is an evaluation option only.
    The labels are always the answer + end-of-turn token (`label_convention` does not apply to fine-tuning)."""
    kwargs = {**formatting.chat_format().kwargs(), "reference_attention_mask": False, "label_convention": "end_of_turn"}
    tokenized = tokenize_dataset(rows, tokenizer, **kwargs)
    return tokenized.map(
        lambda row: {"completion_mask": [int(label != IGNORE_INDEX) for label in row["labels"]]},
        remove_columns=["labels", "attention_mask"],
        desc="Completion masks",
    )


def finetune_model(
    base: ModelSpec,
    rows: Dataset,
    plan: TofuRecipe,
    scratch: Path,
    device: str | None = None,
    restriction: GradientRestriction | None = None,
) -> dict:
    """Fine-tune `base` on `rows` into `scratch` (safetensors + tokenizer); resumes from a checkpoint left there by an
    interrupted run. With `restriction` the loss is ℓ + α‖∇_θ ℓ‖. Returns the training record (seconds, steps, final
    loss)."""
    from trl import SFTTrainer

    model, tokenizer = load_model(base, device)
    notice = chat_format_notice(tokenizer, plan.formatting.chat_format())
    if notice:  # the fallback changes what the model is trained on: say it (the evaluations record it too)
        main_process_print(f"Note: fine-tuning: {notice}")
    dataset = sft_dataset(rows, tokenizer, plan.formatting)
    args = build_sft_config(plan.finetune, scratch / "trainer")
    cut = truncation_notice(dataset, args.max_length, "fine-tuning", setting="finetune.max_length")
    if cut:
        main_process_print(cut)
    trainer_class, extra = SFTTrainer, {}
    if restriction is not None:  # IAU's training phase: ℓ + α‖∇_θ ℓ‖ (a double backward per step)
        from ...trainers.gradient_restriction import GradientRestrictionMixin, causal_lm_loss

        trainer_class = type("GradientRestrictedSFTTrainer", (GradientRestrictionMixin, SFTTrainer), {})
        # TRL's own SFT loss may run a fused LM-head kernel without a double backward: the same NLL from full logits.
        extra = {"gradient_restriction": restriction, "compute_loss_func": causal_lm_loss}
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=build_lora_config(plan.finetune_lora, "finetune_lora"),
        **extra,
    )
    checkpoint = resume_checkpoint(args.output_dir, "fine-tuning")
    tick = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - tick
    if plan.finetune_lora:
        trainer.save_model(str(scratch / "adapter"))  # the adapter alone (safetensors)
        trained = trainer.model.merge_and_unload()
    else:
        trained = trainer.model
    if is_main_process():
        trained.save_pretrained(scratch)  # safetensors
        save_tokenizer(tokenizer, scratch)  # a full disk: one OSError line
        # Numbers only (loss, grad norm, lr per logging step): no text.
        atomic_write_json(scratch / "train_log.json", trainer.state.log_history)
    wait_for_everyone()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "seconds": seconds,
        "steps": trainer.state.global_step,
        "rows": len(dataset),
        "final_logged_loss": losses[-1] if losses else None,
    }


def check_data_separation(plan: TofuRecipe) -> dict[str, Any]:
    """Refuse training data that would invalidate the benchmark: the retain model must never see a forget question,
    and no fine-tuned model a holdout question (holdout is the non-member side of the MIA). Also reports how much of
    the forget set the target saw and of retain_perturbed (model utility) each model saw. Counts only, no text."""
    configs = plan.configs
    forget = set(load_tofu(plan.forget_split, plan.data_dir)["question"])
    holdout = set(load_tofu(configs["holdout"], plan.data_dir)["question"])
    utility = set(load_tofu(configs["retain"], plan.data_dir)["question"])
    report = {}
    for role, selections in plan.train_data.items():
        questions = set(select_rows(selections, plan.data_dir)["question"])
        seen_forget, seen_holdout = len(questions & forget), len(questions & holdout)
        if role == "retain" and seen_forget:
            raise ValueError(
                f"models.retain.train_data ({describe_selections(selections)}) contains {seen_forget} "
                f"{plan.forget_split} question(s): the retain model must never see the forget "
                "set."
            )
        if seen_holdout:
            raise ValueError(
                f"models.{role}.train_data ({describe_selections(selections)}) contains {seen_holdout} "
                f"{configs['holdout']} question(s): holdout data must stay unseen."
            )
        report[role] = {
            "forget_seen": seen_forget,
            "forget_total": len(forget),
            "utility_seen": len(questions & utility),
            "utility_total": len(utility),
        }
    if "target" in report and report["target"]["forget_seen"] < len(forget):
        main_process_print(
            f"Warning: the target model's training data covers only {report['target']['forget_seen']} "
            f"of the {len(forget)} {plan.forget_split} questions."
        )
    return report


def _finetune_fingerprint(plan: TofuRecipe, role: str, rows: Dataset, base: dict[str, Any]) -> dict[str, Any]:
    """What the fine-tuned `role` model is made from: the base (`base`: its identity), the rows, the settings."""
    fingerprint = {
        "base": base,
        "train_data": selections_json(plan.train_data[role]),
        "train_rows_sha256": sha256_json(rows.to_list()),
        "finetune": fingerprint_settings(plan.finetune),
        "finetune_lora": plan.finetune_lora,
        # The fine-tune trains on end-of-turn labels whatever the label convention (`sft_dataset`).
        "formatting": {**plan.formatting.formatting(), "label_convention": "end_of_turn"},
        "versions": environment_versions(),
    }
    restriction = _gradient_restriction(plan, role)
    if restriction is not None:  # only when set: every plain fine-tune keeps its fingerprint (and its cache)
        fingerprint["gradient_restriction"] = dataclasses.asdict(restriction)
    return fingerprint


def _gradient_restriction(plan: TofuRecipe, role: str) -> GradientRestriction | None:
    """The target's gradient restriction (the retain model, the reference of forget quality, is trained plainly)."""
    return plan.finetune_gradient_restriction if role == "target" else None


def _finetuned_card_info(plan: TofuRecipe, role: str, rows: int, record: dict[str, Any]) -> ModelCardInfo:
    """The card of a fine-tuned TOFU model: base, data by name and count, SFT settings (never training text)."""
    base = hub_id_or_none(plan.base.name_or_path) if not plan.base.gguf_file else None
    settings = {**plan.finetune, "LoRA (merged)": plan.finetune_lora or "none", **plan.formatting.formatting()}
    return ModelCardInfo(
        title=f"TOFU {role} model",
        summary=(
            f"The TOFU {role} model: fine-tuned with trl.SFTTrainer (loss on the answer and end-of-turn tokens) on "
            f"TOFU {describe_selections(plan.train_data[role])}, made by hf-unlearn."
        ),
        base_model=base,
        base_model_description=None if base else f"{public_name(plan.base)} (not on the Hub)",
        tags=["tofu"],
        datasets=[TOFU_HUB_ID],
        hyperparameters=settings,
        data={"train": f"TOFU {describe_selections(plan.train_data[role])} ({rows} rows)"},
        notes=[f"{record.get('steps')} optimizer steps in {record.get('seconds', 0):.0f} s"],
    )


def ensure_models(
    plan: TofuRecipe,
    log: StageLog,
    device: str | None = None,
    roles: tuple[str, ...] = ROLES,
    *,
    train: bool = True,
) -> dict[str, ModelSpec]:
    """The target and retain models: given ones as they are, fine-tuned ones from their cache (same fingerprint) or
    trained now. Returns role -> ModelSpec to load them from.

    `train=False`: a model that is not cached raises FileNotFoundError instead of being fine-tuned (for tools that
    run outside the recipe's launch, whose fine-tune would not be the recipe's)."""
    models = {role: spec for role, spec in plan.given.items() if role in roles}
    if any(role in plan.train_data for role in roles):
        log.payload.setdefault("data_checks", check_data_separation(plan))
        fetch_hub_model(plan.base)
        base = plan.base.identity()  # the content hash of the base's files, once for both models
    for role in roles:
        if role not in plan.train_data:
            continue
        # A gradient-restricted target gets its own folder: the plain target's cache stays intact.
        path = plan.models_dir / (f"{role}_gr" if _gradient_restriction(plan, role) else role)
        with log.stage(f"finetune/{role}") as entry:
            rows = select_rows(plan.train_data[role], plan.data_dir)
            fingerprint = _finetune_fingerprint(plan, role, rows, base)
            stamp = cached_stage(path, fingerprint, f"{role} model")
            entry["reused"] = stamp is not None
            if stamp is None and not train:
                raise FileNotFoundError(
                    f"No fine-tuned {role} model of this recipe in {plan.models_dir}: run hf-unlearn finetune."
                )
            if stamp is None:
                main_process_print(
                    f"Fine-tuning the {role} model on {describe_selections(plan.train_data[role])} ({len(rows)} rows)."
                )
                scratch = open_scratch(path, fingerprint)
                record = finetune_model(plan.base, rows, plan, scratch, device, _gradient_restriction(plan, role))
                if is_main_process():
                    write_model_card(scratch, _finetuned_card_info(plan, role, len(rows), record))
                stamp = commit_stage(scratch, path, fingerprint, record)
            entry.update(compute_seconds=stamp.get("seconds"), path=str(path))
        models[role] = ModelSpec(str(path))
    return models
