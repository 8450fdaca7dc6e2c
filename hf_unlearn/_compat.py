"""Shims for older library versions, each saying when it can go."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["checkpointing_settings"]


def checkpointing_settings(config_class: type, enabled: bool) -> dict[str, Any]:
    """`{"activation_checkpointing": enabled}` where the config has that field (transformers >= 5.x renamed
    `gradient_checkpointing` and warns on the old name), else `{"gradient_checkpointing": enabled}`.
    Remove once the lower bound of transformers has `activation_checkpointing`."""
    names = {f.name for f in dataclasses.fields(config_class)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}
