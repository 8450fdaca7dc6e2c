"""Pushing the Markov benchmark's unlearned models (`push_to_hub` in the recipe, or `hf-unlearn run --push-to-hub
REPO_ID`), through the one push path (`hf_unlearn.hub.publish_model`): after each method's evaluation, its folder
`methods/<label>/hub/` is written from the model in memory (the head delta of a head-only method such as IMU, or the
full GPT-2 with `push_full_model: true`) with its card and `model-index`, then uploaded in one commit. Repository names as in the TOFU pipeline: `REPO_ID` for one method, `REPO_ID-<label>` for several.

The base of a head delta is the run's original model (`models/original`, not on the Hub): the same recipe rebuilds
it bit for bit, and `load_head_delta` checks that it is that model.
"""

from __future__ import annotations

from typing import Any

from ...hub import (
    HubPush,
    ModelCardInfo,
    config_hyperparameters,
    head_sha256,
    method_reference,
    publish_model,
    save_for_hub,
    unlearning_eval_results,
)
from ...runtime.distributed import main_process_print
from ...runtime.versions import environment_versions
from .recipe import MarkovRecipe
from .report import markov_table

__all__ = ["publish"]

# The benchmark's numbers (its table's columns), for the card's model-index.
_METRICS = ("retain_loss", "retain_kl", "forget_loss", "forget_kl", "forget1_loss", "forget2_loss")


def publish(
    recipe: MarkovRecipe,
    push: HubPush,
    trainer: Any,
    original: Any,
    results: dict[str, Any],
    rows: dict[str, int],
) -> dict[str, Any]:
    """Write and push one method's folder (main process only); returns the record kept in `results.json`."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    base_hash = head_sha256(original)
    label, method = push.label, push.method
    table = markov_table(
        {
            "original": results["original"],
            "retrained": results["retrained"],
            "methods": {label: results["methods"][label]},
        }
    )
    info = ModelCardInfo(
        title=push.repo_id.split("/")[-1],
        summary=(
            f"A GPT-2 of the synthetic Markov-chain unlearning benchmark, unlearned with {method}"
            f"{'' if label == method else f' ({label})'} on its forget chains with hf-unlearn."
        ),
        method=method,
        method_reference=method_reference(type(trainer)),
        artifact=push.artifact,
        repo_id=push.repo_id,
        base_model_description=(
            "the benchmark's original GPT-2 (`models/original` of the run, not on the Hub; the same recipe rebuilds it)"
        ),
        tags=["markov-chain"],
        hyperparameters=config_hyperparameters(trainer.args),
        data={
            "forget": f"Markov forget1 + forget2 training sequences ({rows['forget']} rows)",
            "retain": f"Markov retain training sequences ({rows['retain']} rows)",
        },
        evaluation="Losses and KL divergences to the retrained model on held-out sequences of each chain.\n\n" + table,
        eval_results=unlearning_eval_results(
            {key: results["methods"][label].get(key) for key in _METRICS},
            dataset_type="markov-chains",
            dataset_name="Synthetic Markov chains (held-out sequences)",
        ),
        versions=environment_versions(),
        notes=[f"{trainer.state.global_step} optimizer steps"],
        tokenizer=False,
    )
    result = publish_model(
        push,
        lambda folder: save_for_hub(model, folder, push.artifact, base_head_sha256=base_hash),
        info,
        forget_texts=(),  # the forget set is Markov state ids: there is no text to leak
        commit_message=f"Upload {label} ({method}) unlearned with hf-unlearn",
    )
    main_process_print(result.message)
    return result.record
