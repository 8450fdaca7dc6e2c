"""Content hashes: of JSON-able settings, of a model's weights in memory, and of files on disk.

Models are keyed by the content of their weights, never by names or sizes: a checkpoint overwritten with other weights
of the same size gets another hash. Hashing a file costs about a second per GB, so a file's hash is kept in a sidecar
beside it (`.NAME.sha256.json`, with the size and modification time it belongs to) and recomputed only when either
changes. Files in a Hugging Face Hub cache are symlinks to blobs already named by their hash: that name is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..utils import sha256_json, weights_sha256

__all__ = ["MODEL_FILE_SUFFIXES", "file_sha256", "folder_sha256", "model_identity", "model_sha256", "sha256_json"]

# What makes up a model folder's content; reports, logs and stage stamps beside the weights are not part of it.
MODEL_FILE_SUFFIXES = (".safetensors", ".gguf", ".json", ".jinja", ".model", ".txt")
_NOT_MODEL_FILES = {"hf_unlearn_stage.json", "train_log.json", "README.md", "hf_unlearn_lock.json"}
_CHUNK = 16 * 2**20
_HUB_BLOB = re.compile(r"^[0-9a-f]{64}$")
_CONFIG_LOCATION_KEYS = {"_name_or_path", "_commit_hash"}


def model_sha256(model: torch.nn.Module) -> str:
    """sha256 of the model's config and every tensor of its state dict (name, dtype, shape, bytes). The config's
    record of where it was loaded from (`_name_or_path`, `_commit_hash`) is left out: the same weights and config
    loaded from another folder are the same model."""
    config = getattr(model, "config", None)
    header = b""
    if config is not None:
        settings = {key: value for key, value in config.to_dict().items() if key not in _CONFIG_LOCATION_KEYS}
        header = json.dumps(settings, sort_keys=True, default=str).encode("utf-8")
    return weights_sha256(model, header)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, cached in a sidecar keyed by size and mtime (or read from a Hub blob's name)."""
    path = Path(path)
    target = path.resolve()
    if _HUB_BLOB.match(target.name) and target.parent.name == "blobs":
        return target.name
    stat = target.stat()
    sidecar = path.with_name(f".{path.name}.sha256.json")
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        cached = json.loads(sidecar.read_text())
        if {k: cached.get(k) for k in key} == key and isinstance(cached.get("sha256"), str):
            return cached["sha256"]
    except (OSError, ValueError):
        pass
    digest = hashlib.sha256()
    with open(target, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    with contextlib.suppress(OSError):  # a read-only folder only costs the re-hash next time
        sidecar.write_text(json.dumps({**key, "sha256": value}))
    return value


def folder_sha256(folder: str | os.PathLike) -> dict[str, str]:
    """`{file name: sha256}` of the model files directly in `folder` (weights, configs, tokenizer files)."""
    folder = Path(folder)
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and p.suffix in MODEL_FILE_SUFFIXES
        and not p.name.startswith(".")
        and p.name not in _NOT_MODEL_FILES
    )
    return {p.name: file_sha256(p) for p in files}


def model_identity(
    name_or_path: str,
    *,
    gguf_file: str | None = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    adapter: str | None = None,
) -> dict[str, Any]:
    """What a stage fingerprint keys a model by: how it is loaded (dtype, GGUF file, remote code) and the content hash
    of every model file. A local folder is keyed by its files alone, so `./x`, `x`, `/abs/x` and a symlink to it are
    the same model, and a checkpoint replaced in place is not. A Hub id is keyed by its cached snapshot (`hub_commit`
    and the snapshot's files: what `from_pretrained` loads from the cache); a Hub id not in the cache by its name.
    `adapter`: a PEFT adapter folder applied on top, keyed by its files alike."""
    from ..hub import hub_id_or_none
    from ..models import hub_snapshot, resolve_model_path

    identity: dict[str, Any] = {
        "name_or_path": name_or_path,
        "gguf_file": gguf_file,
        "dtype": dtype,
        "trust_remote_code": trust_remote_code,
        "adapter": adapter,
    }
    folder = resolve_model_path(name_or_path)
    if Path(folder).is_dir():  # a local folder is its files, however its path is spelled
        del identity["name_or_path"]
    elif hub_id_or_none(folder) is not None:
        snapshot = hub_snapshot(folder, gguf_file)
        if snapshot is not None:
            identity["hub_commit"] = snapshot.name
            folder = str(snapshot)
    if Path(folder).is_dir():
        files = folder_sha256(folder)
        if gguf_file is not None:  # a GGUF folder: that file and its tokenizer
            files = {name: digest for name, digest in files.items() if not name.endswith(".gguf") or name == gguf_file}
        identity["files_sha256"] = files
    if adapter is not None and Path(adapter).is_dir():
        identity["adapter"] = None  # keyed by its files, not by where they are
        identity["adapter_sha256"] = folder_sha256(adapter)
    return identity
