"""Model cards of the TOFU pipeline's models, and pushing the unlearned ones (`push_to_hub` in the recipe, or
`hf-unlearn run --push-to-hub REPO_ID`).

Each method with `push_to_hub` is pushed after its evaluation, so that its card carries the evaluation summary: its
folder `methods/<label>/hub/` is written first (also when the Hub is unavailable), checked for forget-set text, then
uploaded in one commit. What it holds (`hf_unlearn.hub`): the LoRA adapter as evaluated, the head delta of a
head-only method, or the full model with `push_full_model: true`. Repository names: `REPO_ID` when the run pushes
one method, `REPO_ID-<label>` when it pushes several; a method's own `hub_model_id` is used as given.
"""

from __future__ import annotations

from typing import Any

from ...data.tofu import TOFU_HUB_ID
from ...hub import (
    HubPush,
    ModelCardInfo,
    check_pushes,
    config_hyperparameters,
    copy_model_files,
    find_texts,
    finish_push,
    head_sha256,
    hub_id_or_none,
    prepare_folder,
    save_for_hub,
    save_head_delta,
    write_model_card,
)
from ...recipe import build_method_config
from ...runtime.distributed import main_process_print
from ...runtime.hashing import folder_sha256
from ...runtime.versions import environment_versions
from .data import describe_selections, select_rows
from .finetune import load_model, public_name
from .recipe import ModelSpec, TofuPlan
from .report import tofu_table

__all__ = ["check_hub", "publish", "unlearned_card_info"]


def _target_description(plan: TofuPlan, target: ModelSpec) -> str:
    if "target" in plan.train_data:
        return (
            f"the TOFU target model, fine-tuned in this run from {public_name(plan.base)} on TOFU "
            f"{describe_selections(plan.train_data['target'])} (not on the Hub)"
        )
    local = "" if hub_id_or_none(target.name_or_path) else ", a local model"
    return f"the TOFU target model (`{public_name(target)}`{local})"


def _data(plan: TofuPlan, retain_used: bool) -> dict[str, str]:
    """The unlearning data by TOFU config name and row count."""
    data = {}
    for role in ("forget", "retain"):
        selections = plan.unlearn_data[role]
        rows = len(select_rows(selections, plan.data_dir))
        data[role] = f"TOFU {describe_selections(selections)} ({rows} rows)"
    if not retain_used:
        data["retain"] += ", not used (retain_loss: none)"
    return data


def unlearned_card_info(
    plan: TofuPlan,
    label: str,
    spec: dict[str, Any],
    target: ModelSpec,
    record: dict[str, Any],
    *,
    artifact: str,
    repo_id: str | None = None,
    evaluation: str | None = None,
) -> ModelCardInfo:
    """The card of one unlearned model: method, every hyperparameter, data by name and count, evaluation, versions."""
    config = build_method_config(spec, plan.unlearn, plan.output_dir / "_card", where=f"methods.{label}")
    hyperparameters = config_hyperparameters(config)
    if plan.unlearn_lora:
        hyperparameters["adapter (LoRA)"] = plan.unlearn_lora
    hyperparameters["processes"] = plan.launch.num_processes
    base = hub_id_or_none(target.name_or_path) if not target.gguf_file else None
    notes = [f"{record.get('steps')} optimizer steps in {record.get('seconds', 0):.0f} s"] if record else []
    described = _target_description(plan, target)
    return ModelCardInfo(
        title=(repo_id or f"tofu-{plan.forget_split}-{label}").split("/")[-1],
        summary=(
            f"{described[0].upper()}{described[1:]}, unlearned with {spec['method']}"
            f"{'' if label == spec['method'] else f' ({label})'} on TOFU "
            f"{describe_selections(plan.unlearn_data['forget'])} with hf-unlearn."
        ),
        method=spec["method"],
        artifact=artifact,
        repo_id=repo_id,
        base_model=base,
        base_model_description=None if base else described,
        library_name="peft" if artifact == "adapter" else "transformers",
        tags=["tofu"],
        datasets=[TOFU_HUB_ID],
        hyperparameters=hyperparameters,
        data=_data(plan, config.retain_loss != "none"),
        evaluation=evaluation,
        versions=environment_versions(),
        notes=notes,
    )


def check_hub(plan: TofuPlan) -> None:
    """Before anything loads or trains: can the planned pushes happen? One line when not (the folders are still
    written)."""
    if plan.hub:
        problem = check_pushes(plan.hub.values())
        if problem:
            main_process_print(problem)


def _evaluation_table(plan: TofuPlan, label: str, payload: dict[str, Any]) -> str:
    ev = plan.evaluation
    limits = {split: ev.item_limit(split) for split in plan.configs if ev.item_limit(split)}
    subsets = ", ".join(f"{split}: first {count} items" for split, count in limits.items()) or "every item"
    table = tofu_table({"models": payload["models"], "methods": {label: payload["methods"][label]}})
    return (
        f"TOFU {plan.forget_split} ({subsets}; greedy generation, at most {ev.max_new_tokens} new tokens). Forget "
        "quality and privleak are measured against the retain model, which never saw the forget set.\n\n" + table
    )


def publish(
    plan: TofuPlan,
    label: str,
    push: HubPush,
    payload: dict[str, Any],
    target: ModelSpec,
    unlearned: ModelSpec,
    record: dict[str, Any],
    device: str | None,
) -> dict[str, Any]:
    """Write the push folder of one evaluated method, check it for forget text, and push it (main process only);
    returns the record kept in `results.json`."""
    model_dir = plan.output_dir / "methods" / label / "model"
    folder = prepare_folder(push.folder)
    if push.artifact == "head":
        base_model, _ = load_model(target, device)
        base_hash = head_sha256(base_model)
        del base_model
        model, _ = load_model(unlearned, device)
        save_head_delta(model, folder, base_model=hub_id_or_none(target.name_or_path), base_head_sha256=base_hash)
        del model
    elif push.artifact == "full" and unlearned.adapter is not None:  # LoRA merged into the target
        model, tokenizer = load_model(unlearned, device)
        save_for_hub(model, folder, "full", processing_class=tokenizer)
        del model
    else:  # the adapter, or the full model, exactly as saved and evaluated
        copy_model_files(model_dir, folder_sha256(model_dir), folder)
    spec = plan.specs[label]
    info = unlearned_card_info(
        plan,
        label,
        spec,
        target,
        record,
        artifact=push.artifact,
        repo_id=push.repo_id,
        evaluation=_evaluation_table(plan, label, payload),
    )
    write_model_card(folder, info, existing=model_dir / "README.md")
    forget = select_rows(plan.unlearn_data["forget"], plan.data_dir)
    leaked = find_texts(folder, [*forget["question"], *forget["answer"]])
    if leaked:  # never expected: every file is written from settings, numbers and weights
        raise ValueError(f"Refusing to push {folder}: forget-set text found in {', '.join(leaked)}.")
    result, line = finish_push(push, f"Upload {label} ({spec['method']}) unlearned with hf-unlearn")
    main_process_print(line)
    return result
