"""Sharing unlearned models on the Hugging Face Hub: what is pushed, its model card, the push, and loading it back.

What a push holds (`hub_artifact`), smallest first:

- `"adapter"`: a PEFT (LoRA) adapter folder exactly as `PeftModel.save_pretrained` writes it (`library_name: peft`);
  it loads with `PeftModel.from_pretrained(base, REPO)`.
- `"head"`: for head-only unlearning (`trainable="head"`, IMU's default), the LM head's new parameters in
  `head_delta.safetensors` (every other weight is the base model's); `load_head_delta(base, REPO)` applies them and
  refuses a base whose head differs from the one that was unlearned.
- `"full"`: the whole model, only when asked (`push_full_model=True`); a LoRA model is merged first.

The model card is a `huggingface_hub.ModelCard` with YAML metadata (`base_model`, `library_name`, `tags` with
`unlearning` and the method, `datasets`), the method and its hyperparameters, the forget/retain selections by name
and row count, the evaluation summary, library versions and a loading snippet. An existing card (PEFT's) keeps its
metadata. Nothing here ever receives training text: the forget set is described by names and counts only, and a
folder is checked for forget text (`find_texts`) before it is pushed.

A push is one commit (`HfApi.upload_folder`) into a repository created private unless told otherwise. Whether a push
can happen is checked before any training (`check_hub_access`): offline (`HF_HUB_OFFLINE`), no token, a read-only
token or an unreachable Hub give one line saying why, and the folder that would have been pushed is still written.

This module is part of the library core: it knows nothing of processes or benchmarks; callers pass what it needs
(library versions included).
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
    ModelCardInfo,
    adapter_settings,
    build_model_card,
    config_hyperparameters,
    default_versions,
    loading_snippet,
    write_model_card,
)
from .push import (
    HUB_SETTINGS,
    HubPush,
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

__all__ = [
    "ARTIFACTS",
    "HEAD_DELTA_FILE",
    "HUB_SETTINGS",
    "HubPush",
    "ModelCardInfo",
    "adapter_settings",
    "build_model_card",
    "check_hub_access",
    "check_pushes",
    "config_hyperparameters",
    "copy_model_files",
    "create_repo",
    "default_versions",
    "describe_pushes",
    "find_texts",
    "finish_push",
    "head_sha256",
    "hub_artifact",
    "hub_id_or_none",
    "hub_repo_id",
    "load_head_delta",
    "loading_snippet",
    "plan_hub_pushes",
    "prepare_folder",
    "push_folder",
    "save_for_hub",
    "save_head_delta",
    "split_hub_settings",
    "upload_command",
    "write_model_card",
]
