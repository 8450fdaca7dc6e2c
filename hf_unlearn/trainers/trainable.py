"""Which parameters an unlearning method updates: every one, the LM head, a PEFT adapter, or named modules of
chosen decoder layers (`docs/methods.md#trainable-parameters`).

The choice is independent of the loss: IMU's scores always come from the LM head (the classifier-level
approximation), but the update may move any parameter set, so "does reweighting help?" can be asked for the same
parameters GA trains.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import torch

from ..models import untie_output_embeddings

__all__ = ["TRAINABLE", "apply_trainable", "layer_indices", "select_layers"]

logger = logging.getLogger(__name__)

TRAINABLE = ("all", "head", "lora", "patterns")
# Decoder blocks are numbered `...layers.7...` (Llama, Qwen, SmolLM), `...h.7...` (GPT-2) or `...blocks.7...`.
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")


def select_layers(num_layers: int, last_layers: int | None = None, layers_at_depth: Sequence[float] | None = None):
    """Decoder-layer indices from a depth shorthand, or `None` for "no restriction".

    - `last_layers=k`: the last k layers.
    - `layers_at_depth=[a, b]`: fractions of the depth; layers round(a·L) … round(b·L) inclusive (clipped to L − 1),
      e.g. `[0.68, 0.75]` on a 28-layer model gives 19, 20, 21; one fraction selects one layer.

    >>> select_layers(28, layers_at_depth=[0.68, 0.75])
    [19, 20, 21]
    >>> select_layers(4, last_layers=1)
    [3]
    """
    if last_layers is not None and layers_at_depth is not None:
        raise ValueError("Set at most one of trainable_last_layers and trainable_layers_at_depth.")
    if last_layers is not None:
        if not 1 <= last_layers <= num_layers:
            raise ValueError(f"trainable_last_layers={last_layers} must be in 1..{num_layers} (the model's layers).")
        return list(range(num_layers - last_layers, num_layers))
    if layers_at_depth is not None:
        fractions = list(layers_at_depth)
        if (
            len(fractions) not in (1, 2)
            or not all(0.0 <= f <= 1.0 for f in fractions)
            or fractions != sorted(fractions)
        ):
            raise ValueError(
                f"trainable_layers_at_depth={fractions} must be one fraction or an increasing pair in [0, 1]."
            )
        first, last = (min(round(f * num_layers), num_layers - 1) for f in (fractions[0], fractions[-1]))
        return list(range(first, last + 1))
    return None


def layer_indices(name: str) -> int | None:
    """The decoder-layer index in a parameter name, or `None` outside the decoder blocks."""
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def _num_layers(model: torch.nn.Module) -> int:
    indices = {layer_indices(name) for name, _ in model.named_parameters()} - {None}
    if not indices:
        raise ValueError("This model has no numbered decoder layers (`layers.N` / `h.N`): use trainable patterns only.")
    return max(indices) + 1


def apply_trainable(
    model: torch.nn.Module,
    trainable: str,
    patterns: Sequence[str] | None = None,
    last_layers: int | None = None,
    layers_at_depth: Sequence[float] | None = None,
    is_peft: bool = False,
) -> list[str]:
    """Freeze every parameter outside the selection; returns the names of the trainable ones (and logs their count).

    `"all"` keeps what requires a gradient (with PEFT: the adapter), `"lora"` the same but checks that `model` is a
    PEFT model, `"head"` the LM head (with PEFT: its trainable copy in `modules_to_save`), `"patterns"` every
    parameter whose name matches one of the regexes `patterns` (`re.search`), within the layers of the depth
    shorthand when one is given. A head tied to the input embeddings that trains without them is untied first, so
    the input embeddings stay bit-identical.
    """
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable={trainable!r} is not one of {TRAINABLE}.")
    if trainable != "patterns" and (patterns or last_layers is not None or layers_at_depth is not None):
        raise ValueError(
            "trainable_patterns / trainable_last_layers / trainable_layers_at_depth need trainable='patterns'."
        )
    if trainable == "lora" and not is_peft:
        raise ValueError("trainable='lora' needs a PEFT model: pass peft_config= (e.g. a LoraConfig) to the trainer.")
    all_names = dict(model.named_parameters(remove_duplicate=False))  # a tied head keeps its own name here
    if trainable == "patterns":
        names = _matching(all_names, patterns, select_layers(_num_layers(model), last_layers, layers_at_depth))
    elif trainable == "head":
        names = _head_names(model, all_names, is_peft)
    else:
        names = {name for name, parameter in all_names.items() if parameter.requires_grad}
    if not is_peft:
        _untie_head_if_alone(model, names)
        all_names = dict(model.named_parameters(remove_duplicate=False))
    chosen = {id(all_names[name]) for name in names}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in chosen)
    count = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    total = sum(parameter.numel() for parameter in model.parameters())
    logger.info(
        "trainable=%s: %d of %d parameters (%.2f%%) in %d tensors.",
        trainable,
        count,
        total,
        100 * count / max(total, 1),
        len(chosen),
    )
    return sorted(names)


def _matching(all_names: dict[str, torch.nn.Parameter], patterns: Sequence[str] | None, layers: list[int] | None):
    if not patterns and layers is None:
        raise ValueError("trainable='patterns' needs trainable_patterns and/or a layer shorthand.")
    try:
        compiled = [re.compile(pattern) for pattern in patterns or [".*"]]
    except re.error as error:
        raise ValueError(f"trainable_patterns: {error.pattern!r} is not a valid regex ({error}).") from None
    names = {
        name
        for name in all_names
        if any(pattern.search(name) for pattern in compiled) and (layers is None or layer_indices(name) in layers)
    }
    if not names:
        raise ValueError(
            f"trainable_patterns {list(patterns or [])} (layers {layers}) match no parameter of this model; "
            f"its parameter names look like {next(iter(all_names))!r}."
        )
    return names


def _head_names(model: torch.nn.Module, all_names: dict[str, torch.nn.Parameter], is_peft: bool) -> set[str]:
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError("trainable='head' needs a model with an output embedding (model.get_output_embeddings()).")
    prefix = _name_of(model, head) + "."
    if is_peft and getattr(head, "modules_to_save", None) is None:
        raise ValueError(
            "trainable='head' on a PEFT model needs the LM head in the adapter: add modules_to_save=['lm_head'] "
            "(your head's name) to the PEFT config, or use trainable='all' to train the adapter."
        )
    return {name for name in all_names if name.startswith(prefix) and (not is_peft or ".modules_to_save." in name)}


def _untie_head_if_alone(model: torch.nn.Module, names: set[str]) -> None:
    """Give a tied head its own weight when it trains and the input embeddings do not."""
    head, inputs = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or inputs is None or head.weight is not inputs.weight:
        return
    if f"{_name_of(model, head)}.weight" not in names or f"{_name_of(model, inputs)}.weight" in names:
        return
    untie_output_embeddings(model)


def _name_of(model: torch.nn.Module, module: torch.nn.Module) -> str:
    return next(name for name, candidate in model.named_modules(remove_duplicate=False) if candidate is module)
