"""What a push holds: the PEFT adapter, the head delta (`head_delta.safetensors` + `load_head_delta`) or the full
model, written into a local folder that is checked for forget-set text before it goes anywhere."""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "ARTIFACTS",
    "HEAD_DELTA_FILE",
    "copy_model_files",
    "find_texts",
    "head_sha256",
    "hub_artifact",
    "load_head_delta",
    "prepare_folder",
    "save_for_hub",
    "save_head_delta",
]

ARTIFACTS = ("adapter", "head", "full")
HEAD_DELTA_FILE = "head_delta.safetensors"
_HEAD_DELTA_FORMAT = "hf_unlearn.head_delta"


def hub_artifact(*, is_peft: bool, trainable: str, push_full_model: bool, where: str = "") -> str:
    """What a push of this model holds: `"full"` when asked, else the adapter (PEFT) or the head delta (head-only).

    A model whose every weight was trained has nothing smaller to push: that is an error unless the full model was
    asked for (a 1B-parameter model should not be uploaded by accident)."""
    if push_full_model:
        return "full"
    if is_peft:
        return "adapter"
    if trainable == "head":
        return "head"
    raise ValueError(
        f"{where}every weight is trained (no LoRA adapter, trainable='all'), so only the full model could be pushed: "
        "set push_full_model: true to push it, or unlearn with a LoRA adapter or trainable: head."
    )


# ------------------------------------------------------------------------------------------------ folders


def prepare_folder(folder: str | os.PathLike) -> Path:
    """An empty `folder` (a previous one is replaced: a push folder is rebuilt every time)."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def copy_model_files(source: str | os.PathLike, names: Iterable[str], folder: str | os.PathLike) -> None:
    """Copy the named files of a saved model (weights, configs, tokenizer) into a push folder."""
    for name in names:
        shutil.copy2(Path(source) / name, Path(folder) / name)


def _file_text_chunks(path: Path, overlap: int, chunk: int = 1 << 24) -> Iterable[str]:
    """A file's text in overlapping chunks (a large file is never read whole); of a `.safetensors` file, the JSON
    header only (its metadata: the rest is tensor bytes)."""
    with path.open("rb") as handle:
        if path.suffix == ".safetensors":
            size = int.from_bytes(handle.read(8), "little")
            yield handle.read(min(size, 1 << 27)).decode("utf-8", errors="ignore")
            return
        previous = b""
        while block := handle.read(chunk):
            yield (previous + block).decode("utf-8", errors="ignore")
            previous = (previous + block)[-overlap:]


def find_texts(folder: str | os.PathLike, texts: Iterable[str], min_length: int = 16) -> list[str]:
    """Files under `folder` that contain any of `texts` (those of at least `min_length` characters: a short answer
    such as "Yes." would match anywhere). Run on a push folder with the forget questions and answers."""
    texts = [text for text in set(texts) if len(text) >= min_length]
    if not texts:
        return []
    overlap = 4 * max(len(text) for text in texts)  # bytes: a UTF-8 character takes at most 4
    found = []
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and any(text in part for part in _file_text_chunks(path, overlap) for text in texts):
            found.append(str(path.relative_to(folder)))
    return found


def save_for_hub(
    model: Any,
    folder: str | os.PathLike,
    artifact: str,
    *,
    processing_class: Any | None = None,
    base_model: str | None = None,
    base_head_sha256: str | None = None,
) -> None:
    """Write what a push of `model` holds into `folder`: the PEFT adapter, the head delta, or the full model (a PEFT
    model merged into a copy first). The tokenizer travels with an adapter or a full model."""
    if artifact not in ARTIFACTS:
        raise ValueError(f"artifact={artifact!r} is not one of {ARTIFACTS}.")
    folder = Path(folder)
    is_peft = hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")
    if artifact == "head":
        save_head_delta(model, folder, base_model=base_model, base_head_sha256=base_head_sha256)
        return
    if artifact == "adapter" and not is_peft:
        raise ValueError("artifact='adapter' needs a PEFT model.")
    if artifact == "full" and is_peft:
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(folder, safe_serialization=True)
    if processing_class is not None:
        processing_class.save_pretrained(folder)


# ------------------------------------------------------------------------------------------------ head delta


def _head_parameters(model: Any) -> dict[str, Any]:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embedding (get_output_embeddings()): no head delta.")
    return dict(head.named_parameters(recurse=False))


def head_sha256(model: Any) -> str:
    """sha256 of the LM head's values as float32 (so a bf16 and an fp32 copy of one base agree), hashed in row
    chunks so that a large head is never copied whole."""
    digest = hashlib.sha256()
    for name, parameter in sorted(_head_parameters(model).items()):
        digest.update(f"{name}|{tuple(parameter.shape)}".encode())
        rows = parameter.detach().reshape(parameter.shape[0], -1)
        for start in range(0, rows.shape[0], 4096):
            digest.update(rows[start : start + 4096].float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_head_delta(
    model: Any,
    folder: str | os.PathLike,
    *,
    base_model: str | None = None,
    base_head_sha256: str | None = None,
) -> Path:
    """Write the LM head's parameters (`weight`, and `bias` if any) to `folder/head_delta.safetensors`, with the
    base model's name and head hash in the file's metadata (checked by `load_head_delta`)."""
    from safetensors.torch import save_file

    tensors = {name: p.detach().cpu().contiguous() for name, p in _head_parameters(model).items()}
    metadata = {"format": "pt", "hf_unlearn": _HEAD_DELTA_FORMAT, "base_model": base_model or ""}
    metadata["base_head_sha256"] = base_head_sha256 or ""
    path = Path(folder) / HEAD_DELTA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def _head_delta_path(repo_or_path: str | os.PathLike, revision: str | None, token: str | None) -> Path:
    path = Path(repo_or_path)
    if path.is_dir():
        path = path / HEAD_DELTA_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{repo_or_path} has no {HEAD_DELTA_FILE}.")
        return path
    if path.is_file():
        return path
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(str(repo_or_path), HEAD_DELTA_FILE, revision=revision, token=token))


def load_head_delta(
    base_model: Any,
    repo_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | None = None,
    check_base: bool = True,
) -> Any:
    """Apply a pushed head delta to its base model and return the model (changed in place).

    Args:
        base_model: the model the head was unlearned from (a `PreTrainedModel`), or its Hub id / folder (loaded with
            `AutoModelForCausalLM.from_pretrained`).
        repo_or_path: a Hub repository, a folder holding `head_delta.safetensors`, or the file itself.
        check_base: refuse a base whose head differs from the one that was unlearned (the delta replaces the head:
            on another base it would give nonsense, silently).

    A head tied to the input embeddings is untied first, so the input embeddings stay the base model's.

    >>> model = load_head_delta(AutoModelForCausalLM.from_pretrained("BASE"), "you/unlearned-head")  # doctest: +SKIP
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ..models import untie_output_embeddings

    if isinstance(base_model, (str, os.PathLike)):
        from transformers import AutoModelForCausalLM

        base_model = AutoModelForCausalLM.from_pretrained(os.fspath(base_model))
    path = _head_delta_path(repo_or_path, revision, token)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("hf_unlearn") != _HEAD_DELTA_FORMAT:
        raise ValueError(f"{path} is not an hf-unlearn head delta (no '{_HEAD_DELTA_FORMAT}' metadata).")
    expected = metadata.get("base_head_sha256")
    if check_base and expected:
        found = head_sha256(base_model)
        if found != expected:
            raise ValueError(
                f"This head delta was unlearned from another base model ({metadata.get('base_model') or 'unnamed'}): "
                f"its head hash {expected[:12]}... differs from this model's {found[:12]}...; load the right base, "
                "or pass check_base=False to apply it anyway."
            )
    tensors = load_file(str(path))
    untie_output_embeddings(base_model)
    parameters = _head_parameters(base_model)
    if set(tensors) != set(parameters):
        raise ValueError(f"The head delta has {sorted(tensors)}, the model's head has {sorted(parameters)}.")
    with torch.no_grad():
        for name, tensor in tensors.items():
            if tuple(tensor.shape) != tuple(parameters[name].shape):
                raise ValueError(
                    f"Head delta {name} has shape {tuple(tensor.shape)}, the model's {tuple(parameters[name].shape)}."
                )
            parameters[name].copy_(tensor.to(parameters[name].dtype))
    return base_model
