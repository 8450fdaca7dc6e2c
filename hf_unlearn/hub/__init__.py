"""Sharing unlearned models on the Hugging Face Hub: what is pushed, its model card, the push, and loading it back.

What a push holds (`hub_artifact`), smallest first:

- `"adapter"`: a PEFT (LoRA) adapter folder exactly as `PeftModel.save_pretrained` writes it (`library_name: peft`);
  it loads with `PeftModel.from_pretrained(base, REPO)`.
- `"head"`: for head-only unlearning (`trainable="head"`, IMU's default), the LM head's new parameters in
  `head_delta.safetensors` (every other weight is the base model's; `library_name: hf-unlearn`, since neither PEFT nor
  transformers loads it); `load_head_delta(base, REPO)` applies them and refuses a base whose head differs from the
  one that was unlearned.
- `"full"`: the whole model, only when asked (`push_full_model=True`); a LoRA model is merged first.

Every push goes through one function, `publish_model` (the pipelines of `hf-unlearn run --push-to-hub`, and
`UnlearnTrainer.push_to_hub()` through `HubMixin`): it writes the folder and its card, refuses the folder if any file
holds a forget question or answer (`check_forget_text`), then uploads it in one commit (`HfApi.upload_folder`) into a
repository created private unless told otherwise, or, when the Hub is unavailable, gives the one command that uploads
it later (`upload_command`, which keeps `--private`).

The model card is made with `ModelCard.from_template` from a `ModelCardData`: `base_model`, `library_name`, `license`
(the base model's, when its card is on this machine), `tags` with `unlearning` and the method, `datasets`, a
`model-index` of the unlearning metrics (`EvalResult`); then the method and its hyperparameters, the forget/retain
selections by name and row count, the evaluation summary, library versions and how to load it. An existing card
(PEFT's) keeps its metadata. Nothing here ever receives training text.

Whether a push can happen is checked before any training (`check_hub_access`): offline (`HF_HUB_OFFLINE`), no token,
a read-only token or an unreachable Hub give one line saying why, and the folder that would have been pushed is still
written.

This module is part of the library core: it knows nothing of trainers, processes or benchmarks; callers pass what it
needs (the method's reference and library versions included).
"""

from .artifacts import (
    ARTIFACTS,
    HEAD_DELTA_FILE,
    copy_model_files,
    find_texts,
    head_sha256,
    hub_artifact,
    load_head_delta,
    prepare_folder,
    save_for_hub,
    save_head_delta,
)
from .card import (
    LIBRARY_NAMES,
    ModelCardInfo,
    adapter_settings,
    base_license,
    build_model_card,
    config_hyperparameters,
    default_versions,
    gguf_file_of,
    loading_snippet,
    method_reference,
    unlearning_eval_results,
    write_model_card,
)
from .publish import check_forget_text, forget_texts_of_rows, publish_model, write_push_folder
from .push import (
    HUB_SETTINGS,
    HubPush,
    PushResult,
    check_hub_access,
    check_pushes,
    create_repo,
    describe_pushes,
    finish_push,
    hub_id_or_none,
    hub_repo_id,
    plan_hub_pushes,
    push_folder,
    split_hub_settings,
    upload_command,
)
from .trainer import HubMixin

__all__ = [
    "ARTIFACTS",
    "HEAD_DELTA_FILE",
    "HUB_SETTINGS",
    "LIBRARY_NAMES",
    "HubMixin",
    "HubPush",
    "ModelCardInfo",
    "PushResult",
    "adapter_settings",
    "base_license",
    "build_model_card",
    "check_forget_text",
    "check_hub_access",
    "check_pushes",
    "config_hyperparameters",
    "copy_model_files",
    "create_repo",
    "default_versions",
    "describe_pushes",
    "find_texts",
    "finish_push",
    "forget_texts_of_rows",
    "gguf_file_of",
    "head_sha256",
    "hub_artifact",
    "hub_id_or_none",
    "hub_repo_id",
    "load_head_delta",
    "loading_snippet",
    "method_reference",
    "plan_hub_pushes",
    "prepare_folder",
    "publish_model",
    "push_folder",
    "save_for_hub",
    "save_head_delta",
    "split_hub_settings",
    "unlearning_eval_results",
    "upload_command",
    "write_model_card",
    "write_push_folder",
]
