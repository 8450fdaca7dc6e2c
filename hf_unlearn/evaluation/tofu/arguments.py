"""`TofuEvalArguments`: what `evaluate_tofu` computes, and the named presets (`reference`: the TOFU reference
evaluator's conventions; `teacher_forced_only`: no generation).

>>> TofuEvalArguments.preset("reference", forget_split="forget10")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from typing import Any

from ...data.tofu import TofuFormat
from ..runner import GENERATION_SCHEDULES
from .data import SPLITS, tofu_split_configs

__all__ = ["DEFAULT_MIA_ATTACKS", "EVAL_PRESETS", "MIA_ATTACKS", "TofuEvalArguments"]

# Every attack `mia_attacks` may name; the first three read the scoring pass every evaluation makes (the default),
# the other three make their own pass over the forget and holdout items (`hf_unlearn.evaluation.mia`).
MIA_ATTACKS = ("min_k", "loss", "zlib", "min_k_plus_plus", "gradnorm", "reference")
DEFAULT_MIA_ATTACKS = ("min_k", "loss", "zlib")

# Named settings (`TofuEvalArguments.preset`, CLI `--preset`). `reference`: the TOFU reference evaluator's conventions,
# so that numbers can be compared with published ones (docs/metrics.md#reference-quirks). `teacher_forced_only`: no
# generation (ROUGE and model_utility are None), the cheap mode for callbacks and sweeps.
EVAL_PRESETS: dict[str, dict[str, Any]] = {
    "reference": {"label_convention": "reference", "reference_attention_mask": True, "es_reference_floor": True},
    "teacher_forced_only": {"compute_rouge": False},
}


@dataclass
class TofuEvalArguments(TofuFormat):
    """What `evaluate_tofu` computes: splits, item limits, batch sizes, generation budget, formatting (the fields of
    `TofuFormat`) and MIA options. The recipe's `evaluation` section, `hf-unlearn eval`'s flags (`HfArgumentParser`)
    and the function read this one dataclass, so every default is written here only.

    Parameters:
        forget_split (`str`, defaults to `"forget05"`):
            `forget01`, `forget05` or `forget10` (holdout and retain model follow: holdout05, retain95).
        batch_size (`int`, defaults to `16`):
            Answers per teacher-forced forward pass.
        generation_batch_size (`int` or `None`, defaults to `128`):
            Prompts generated together at most (None: `batch_size`). A decoding step reads every weight once for
            all its rows, so many rows make each token cheap (on 2 CPU cores 128 rows take 0.6x the time of 16 for
            SmolLM2-135M; docs/results/eval_speed.md); the KV cache grows with it.
        generation_schedule (`str`, defaults to `"refill"`):
            `"refill"`: a finished answer leaves the batch at once and its slot takes the next prompt (a manual
            greedy loop over the KV cache; same tokens as `generate` up to float rounding, see
            `docs/metrics.md#generation`). `"generate"`: the previous path, fixed length-sorted batches through
            `model.generate`. Models `"refill"` does not support (sliding-window attention, encoder-decoders) use
            `"generate"`. For GPUs: `"static_compile"` (`generate` with a static KV cache and a compiled decoding
            step, every batch padded to one shape) and `"vllm"` (the `hf-unlearn[vllm]` extra; one process, not with
            `reference_attention_mask`).
        reuse_prefix_cache (`bool`, defaults to `True`):
            With `"refill"`: compute the head shared by every prompt (system prompt and template) once and start
            every row from a copy of its KV cache.
        max_new_tokens (`int`, defaults to `200`):
            Greedy generation budget for ROUGE (the reference's 200).
        max_items (`int` or `None`, defaults to `None`):
            Evaluate only the first N items of every split (quick looks; not comparable with full runs).
        max_forget_items, max_holdout_items, max_retain_items, max_real_authors_items, max_world_facts_items
            (`int` or `None`): per-split limits that override `max_items`, e.g. all forget/holdout items (forget
            quality, privleak) with model utility on documented subsets.
        onednn_linears (`bool`, defaults to `True`):
            On a CPU, every float32 `nn.Linear` runs oneDNN's kernel on a copy of its weight reordered once per
            evaluation (`hf_unlearn.evaluation.kernels`): about 2x faster for the LM head at decoding batch sizes;
            only the rounding changes. No effect on other devices or dtypes.
        compute_rouge (`bool`, defaults to `True`):
            False skips generation: ROUGE metrics and model_utility are None.
        share_prompts (`bool`, defaults to `True`):
            Score all answers to one question in one packed row, computing the prompt once (same numbers up to
            float rounding; needs eager/SDPA attention, else one sequence per answer).
        es_reference_floor (`bool`, defaults to `True`):
            Extraction strength's reference quirk: ES = 1/n when no suffix matches (False: 0).
        min_k (`float`, defaults to `0.4`):
            Fraction k of the Min-K% attack.
        mia_attacks (`list[str]`, defaults to `["min_k", "loss", "zlib"]`):
            Attacks whose AUC is reported as `mia_<name>`; `min_k` is always computed (privleak uses it). Also
            `min_k_plus_plus` (Min-K%++), `gradnorm` (a backward pass per item) and `reference` (needs
            `mia_reference_model`), each an extra pass over the forget and holdout items.
        mia_reference_model (`str`, *optional*):
            The reference model of the `reference` attack (usually the retain model): a local folder or Hub id with
            the evaluated model's tokenizer.
    """

    forget_split: str = field(default="forget05", metadata={"help": "forget01, forget05 or forget10."})
    batch_size: int = field(default=16, metadata={"help": "Answers per teacher-forced forward pass."})
    generation_batch_size: int | None = field(default=128, metadata={"help": "Prompts generated together at most."})
    generation_schedule: str = field(
        default="refill",
        metadata={
            "help": "'refill' (finished rows leave, slots take the next prompt), 'generate' (fixed batches); "
            "GPU backends 'static_compile' (static cache + torch.compile) and 'vllm' (the [vllm] extra).",
            "choices": list(GENERATION_SCHEDULES),
        },
    )
    reuse_prefix_cache: bool = field(
        default=True, metadata={"help": "Compute the prompts' shared head once and reuse its KV cache."}
    )
    max_new_tokens: int = field(default=200, metadata={"help": "Greedy generation budget for ROUGE."})
    max_items: int | None = field(default=None, metadata={"help": "First N items of every split only."})
    max_forget_items: int | None = field(default=None, metadata={"help": "First N forget items (overrides max_items)."})
    max_holdout_items: int | None = field(default=None, metadata={"help": "First N holdout items."})
    max_retain_items: int | None = field(default=None, metadata={"help": "First N retain_perturbed items."})
    max_real_authors_items: int | None = field(default=None, metadata={"help": "First N real-author items."})
    max_world_facts_items: int | None = field(default=None, metadata={"help": "First N world-fact items."})
    onednn_linears: bool = field(
        default=True,
        metadata={
            "help": "On a CPU, float32 linear layers run oneDNN on weights reordered once (faster; rounding only)."
        },
    )
    compute_rouge: bool = field(default=True, metadata={"help": "Generate answers (ROUGE, model utility)."})
    share_prompts: bool = field(default=True, metadata={"help": "Compute each question's prompt once."})
    es_reference_floor: bool = field(default=True, metadata={"help": "ES = 1/n when no suffix matches (reference)."})
    min_k: float = field(
        default=0.4,
        metadata={"help": "k of the Min-K (percent) membership attack: fraction of lowest-probability tokens."},
    )
    mia_attacks: list[str] = field(
        default_factory=lambda: list(DEFAULT_MIA_ATTACKS),
        metadata={"help": f"Reported MIAs, of {', '.join(MIA_ATTACKS)}."},
    )
    mia_reference_model: str | None = field(
        default=None, metadata={"help": "Reference model of the 'reference' MIA (usually the retain model)."}
    )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TofuEvalArguments:
        """Arguments from a named preset (`EVAL_PRESETS`) with `overrides` on top, e.g.
        `TofuEvalArguments.preset("reference", forget_split="forget10")`."""
        if name not in EVAL_PRESETS:
            raise ValueError(f"Unknown evaluation preset {name!r}; use one of {', '.join(EVAL_PRESETS)}.")
        return cls(**{**EVAL_PRESETS[name], **overrides})

    def __post_init__(self) -> None:
        super().__post_init__()
        tofu_split_configs(self.forget_split)
        for name in ("batch_size", "max_new_tokens", "generation_batch_size", *self.item_limit_fields()):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if self.generation_schedule not in GENERATION_SCHEDULES:
            raise ValueError(
                f"generation_schedule must be one of {list(GENERATION_SCHEDULES)}, got {self.generation_schedule!r}."
            )
        if self.generation_schedule == "vllm":
            if importlib.util.find_spec("vllm") is None:
                raise ValueError("generation_schedule='vllm' needs vLLM: pip install 'hf-unlearn[vllm]'.")
            if self.reference_attention_mask:
                raise ValueError(
                    "generation_schedule='vllm' cannot apply reference_attention_mask (it masks tokens inside a "
                    "prompt); use 'refill' or 'generate'."
                )
        unknown = sorted(set(self.mia_attacks) - set(MIA_ATTACKS))
        if unknown:
            raise ValueError(f"Unknown MIA attack(s) {unknown}; use {list(MIA_ATTACKS)}.")
        if "reference" in self.mia_attacks and not self.mia_reference_model:
            raise ValueError("mia_attacks has 'reference' but no mia_reference_model (its reference model) is given.")
        if not 0 < self.min_k <= 1:
            raise ValueError(f"min_k must be in (0, 1], got {self.min_k}.")

    @staticmethod
    def item_limit_fields() -> list[str]:
        return ["max_items"] + [f"max_{split}_items" for split in SPLITS]

    def item_limit(self, split: str) -> int | None:
        limit = getattr(self, f"max_{split}_items")
        return self.max_items if limit is None else limit

    def settings(self) -> dict[str, Any]:
        """What shapes the numbers, for the fingerprint and `summary.json` (batch sizes included: they change the
        float rounding)."""
        values = dataclasses.asdict(self)
        values["mia_attacks"] = sorted(set(self.mia_attacks) | {"min_k"})
        values["generation_batch_size"] = self.generation_batch_size or self.batch_size
        return values
