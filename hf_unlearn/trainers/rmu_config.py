from dataclasses import dataclass, field
from typing import Any

from .base_config import RETAIN_LOSSES, UnlearnConfig

__all__ = ["RMU_PRESETS", "RMUConfig"]

# Named settings (`RMUConfig.preset`): the reference toolkit's TOFU experiment, and the original WMDP recipe's
# published zephyr-7b run (its layers are Mistral-style `model.layers.N.mlp.down_proj`).
RMU_PRESETS: dict[str, dict[str, Any]] = {
    "tofu": {"steering_coefficient": 2.0, "layer": 7, "forget_loss_weight": 1.0, "retain_loss_weight": 1.0},
    "wmdp_zephyr": {
        "steering_coefficient": 6.5,
        "layer": 7,
        "forget_loss_weight": 1.0,
        "retain_loss_weight": 1200.0,
        "trainable": "patterns",
        "trainable_patterns": [r"layers\.(5|6|7)\.mlp\.down_proj\.weight"],
        "learning_rate": 5e-5,
        "lr_scheduler_type": "constant",
        "per_device_train_batch_size": 4,
        "max_steps": 150,
        "seed": 42,
    },
}


@dataclass
class RMUConfig(UnlearnConfig):
    r"""
    Configuration of [`RMUTrainer`] (representation misdirection):
    L = γ·(1/N_f)Σ_{t∈A_f}(1/d)‖h_t − c·u‖² + α·(1/N_r)Σ_{t∈A_r}(1/d)‖h_t − h_t^ref‖², h_t the output of decoder
    layer `layer` at answer token t, u a random unit vector with positive entries drawn once per run, h^ref the
    frozen initial model's (`docs/methods.md#rmu`). Defaults are the reference toolkit's TOFU experiment (c = 2,
    γ = α = 1, layer 7, every parameter trained); `RMUConfig.preset("wmdp_zephyr", ...)` gives the original WMDP
    recipe (c = 6.5, α = 1200, only `mlp.down_proj` of layers 5–7 trained, lr 5e-5 constant, batch 4, 150 steps).

    Parameters:
        steering_coefficient (`float`, *optional*, defaults to `2.0`):
            c: norm of the control vector the forget activations are pushed to.
        layer (`int`, *optional*, defaults to `7`):
            The decoder layer (0-based) whose output activations are steered.
        forget_loss_weight (`float`, *optional*, defaults to `1.0`):
            γ: weight of the forget term.
        retain_loss (`str`, *optional*, defaults to `"activations"`):
            `"activations"`: the retain term matches the frozen model's activations at `layer` on the retain batch;
            `"none"`: no retain term.
        retain_loss_weight (`float`, *optional*, defaults to `1.0`):
            α: weight of the retain term.
    """

    steering_coefficient: float = field(default=2.0, metadata={"help": "c: norm of the control vector c·u."})
    layer: int = field(default=7, metadata={"help": "Decoder layer (0-based) whose output activations are steered."})
    forget_loss_weight: float = field(default=1.0, metadata={"help": "γ: weight of the forget term."})
    retain_loss: str = field(
        default="activations", metadata={"help": "'activations' (‖h − h_ref‖² on the retain batch) or 'none'."}
    )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "RMUConfig":
        """A config with the named settings of `RMU_PRESETS` ("tofu", "wmdp_zephyr"), `overrides` on top."""
        if name not in RMU_PRESETS:
            raise ValueError(f"Unknown RMU preset {name!r}: one of {', '.join(RMU_PRESETS)}.")
        return cls(**{**RMU_PRESETS[name], **overrides})

    def __post_init__(self):
        if self.retain_loss not in ("activations", "none"):
            raise ValueError(f"retain_loss={self.retain_loss!r}: RMU's retain term is 'activations' (or 'none').")
        if self.steering_coefficient <= 0:
            raise ValueError(f"steering_coefficient must be > 0, got {self.steering_coefficient}.")
        if self.layer < 0:
            raise ValueError(f"layer must be >= 0, got {self.layer}.")
        if self.forget_loss_weight <= 0:
            raise ValueError(f"forget_loss_weight must be > 0, got {self.forget_loss_weight}.")
        # The shared checks know the retain terms of RETAIN_LOSSES; RMU's own term is checked like one of them.
        kind, self.retain_loss = self.retain_loss, "none" if self.retain_loss == "none" else RETAIN_LOSSES[1]
        try:
            super().__post_init__()
        finally:
            self.retain_loss = kind
