"""Robustness attacks on an unlearned model: does the forgotten knowledge come back?

Each attack is a small function over a model and data that returns the attacked model (or its scores) and an
`AttackRecord` saying what was done; `recovery` turns the scores into one number per forget metric. Nothing here
imports a task, the runtime or the command line, and importing the package loads no torch (exports are lazy).

- `relearn`: fine-tune a copy of the model (full or LoRA) with `transformers.Trainer` and score it at checkpoints.
- `quantize`: 8- or 4-bit through bitsandbytes (default), torchao or a pure-torch round-to-nearest, with the count of
  layers really quantized and whether the logits changed; `quantized_code_change` measures how many weights whose
  value unlearning changed still differ once quantized.
- `logit_lens`, `prefix_probe`, `few_shot_probe`, `token_loss`: probes that score without changing the weights.

See docs/attacks.md for the protocols.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "AttackRecord": ".record",
    "recovery": ".record",
    "RelearnArguments": ".relearning",
    "relearn": ".relearning",
    "relearn_split": ".relearning",
    "QUANT_BACKENDS": ".record",
    "quantize": ".quantization",
    "quantized_code_change": ".quantization",
    "rtn_codes": ".quantization",
    "rtn_fake_quant": ".quantization",
    "few_shot_probe": ".probes",
    "lens_logits": ".probes",
    "logit_lens": ".probes",
    "prefix_probe": ".probes",
    "token_loss": ".probes",
    "ATTACK_NAMES": ".suite",
    "RELEARN_SETS": ".suite",
    "AttackArguments": ".suite",
    "attack_versions": ".suite",
    "controls_recovery": ".suite",
    "recovery_rows": ".suite",
    "recovery_table": ".suite",
    "run_attacks": ".suite",
    "run_task_attacks": ".suite",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
