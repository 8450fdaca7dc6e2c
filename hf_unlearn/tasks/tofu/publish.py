"""Model cards of the TOFU pipeline's models, and pushing the unlearned ones (`push_to_hub` in the recipe, or
`hf-unlearn run --push-to-hub REPO_ID`).

Each method with `push_to_hub` is pushed after its evaluation, so that its card carries the evaluation summary and its
`model-index`, through the one push path (`hf_unlearn.hub.publish_model`): its folder `methods/<label>/hub/` is
written first (also when the Hub is unavailable), checked for forget-set text, then uploaded in one commit. What it holds (`hf_unlearn.hub`): the LoRA adapter as evaluated, the head delta of a
head-only method, or the full model with `push_full_model: true`. Repository names: `REPO_ID` when the run pushes
one method, `REPO_ID-<label>` when it pushes several; a method's own `hub_model_id` is used as given.
"""

from __future__ import annotations

from typing import Any

from ...data.tofu import TOFU_HUB_ID
from ...hub import (
    HubPush,
    ModelCardInfo,
    base_license,
    config_hyperparameters,
    copy_model_files,
    head_sha256,
    hub_id_or_none,
    method_reference,
    publish_model,
    save_for_hub,
    save_head_delta,
    unlearning_eval_results,
)
from ...recipe import build_method_config
from ...runtime.distributed import main_process_print
from ...runtime.hashing import folder_sha256
from ...runtime.versions import environment_versions
from ...trainers import METHODS
from .data import describe_selections, select_rows
from .finetune import load_model, public_name
from .recipe import ModelSpec, TofuPlan
from .report import TOFU_COLUMNS, tofu_table

__all__ = ["publish", "unlearned_card_info"]


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
    metrics: dict[str, Any] | None = None,
) -> ModelCardInfo:
    """The card of one unlearned model: method, every hyperparameter, data by name and count, evaluation (`metrics`:
    the table's numbers, for the `model-index`), the base's license, versions."""
    config = build_method_config(spec, plan.unlearn, plan.output_dir / "_card", where=f"methods.{label}")
    hyperparameters = config_hyperparameters(config)
    if plan.unlearn_lora:
        hyperparameters["adapter (LoRA)"] = plan.unlearn_lora
    hyperparameters["processes"] = plan.launch.num_processes
    base = hub_id_or_none(target.name_or_path)
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
        method_reference=method_reference(METHODS[spec["method"]][1]) if spec["method"] in METHODS else None,
        artifact=artifact,
        repo_id=repo_id,
        base_model=base,
        base_model_description=None if base else described,
        base_gguf_file=target.gguf_file,
        tags=["tofu"],
        datasets=[TOFU_HUB_ID],
        hyperparameters=hyperparameters,
        data=_data(plan, config.retain_loss != "none"),
        evaluation=evaluation,
        eval_results=unlearning_eval_results(
            metrics or {},
            dataset_type=TOFU_HUB_ID,
            dataset_name="TOFU",
            dataset_config=plan.forget_split,
        ),
        versions=environment_versions(),
        notes=notes,
        # The target's card (a fine-tuned target's says nothing of it), else the base it was fine-tuned from.
        **base_license(target.path, plan.base.path if plan.base is not None else None),
    )


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
    """Write the push folder of one evaluated method and push it through the one push path (`publish_model`: card,
    forget-text guard, upload or the command that uploads it later); main process only. Returns the record kept in
    `results.json`."""
    model_dir = plan.output_dir / "methods" / label / "model"

    def write_files(folder):
        if push.artifact == "head":
            base_model, _ = load_model(target, device)
            base_hash = head_sha256(base_model)
            del base_model
            model, _ = load_model(unlearned, device)
            save_head_delta(model, folder, base_model=hub_id_or_none(target.name_or_path), base_head_sha256=base_hash)
        elif push.artifact == "full" and unlearned.adapter is not None:  # LoRA merged into the target
            model, tokenizer = load_model(unlearned, device)
            save_for_hub(model, folder, "full", processing_class=tokenizer)
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
        metrics={key: payload["methods"][label].get("metrics", {}).get(key) for key, _ in TOFU_COLUMNS},
    )
    forget = select_rows(plan.unlearn_data["forget"], plan.data_dir)
    result = publish_model(
        push,
        write_files,
        info,
        forget_texts=[*forget["question"], *forget["answer"]],
        commit_message=f"Upload {label} ({spec['method']}) unlearned with hf-unlearn",
        existing_card=model_dir / "README.md",
    )
    main_process_print(result.message)
    return result.record
