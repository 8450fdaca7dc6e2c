"""What an attack did (`AttackRecord`) and how much of the forgotten knowledge it brought back (`recovery`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["QUANT_BACKENDS", "AttackRecord", "recovery"]

# The quantization attack's backends (`hf_unlearn.attacks.quantization`), here so that a recipe is checked without torch.
QUANT_BACKENDS = ("bitsandbytes", "torchao", "rtn", "gptq")


@dataclass
class AttackRecord:
    """One attack as it was run: its name, its settings and what it found along the way (layers quantized, logits
    changed, relearning checkpoints...). Plain data, written into results files as `to_dict()`."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recovery(
    attacked: dict[str, float | None],
    unlearned: dict[str, float | None],
    original: dict[str, float | None],
    keys: list[str] | tuple[str, ...] | None = None,
    min_gap: float = 1e-6,
) -> dict[str, float | None]:
    """Recovery of each forget metric M: (M(attacked) − M(unlearned)) / (M(original) − M(unlearned)).

    0 when the attack changes nothing, 1 when the attacked model scores like the original, above 1 when it passes it,
    below 0 when the attack pushes the model further from the original. The sign of M does not matter (a loss that
    unlearning raised and a probability that it lowered both recover towards the original). None where a value is
    missing or unlearning moved M by less than `min_gap` (the ratio would say nothing).

    Args:
        attacked, unlearned, original: metric name -> value of the attacked model, the model before the attack, and
            the model before unlearning. For the retrained-model control pass the retrained model as `unlearned`.
        keys: the metrics to compare (default: every key of `attacked`).
        min_gap: smallest |M(original) − M(unlearned)| for which a ratio is given.

    >>> recovery({"forget_loss": 2.0}, {"forget_loss": 3.0}, {"forget_loss": 1.0})
    {'forget_loss': 0.5}
    """
    result: dict[str, float | None] = {}
    for key in keys if keys is not None else list(attacked):
        values = (attacked.get(key), unlearned.get(key), original.get(key))
        if any(value is None or not math.isfinite(value) for value in values):
            result[key] = None
            continue
        after, before, reference = values
        gap = reference - before
        result[key] = None if abs(gap) < min_gap else (after - before) / gap
    return result
