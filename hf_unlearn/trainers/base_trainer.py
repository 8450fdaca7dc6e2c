"""A thin `Trainer` base for unlearning: forget/retain routing, the reference model, the retain term, logging."""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel, Trainer, TrainerCallback

from ..data.pairing import ForgetRetainDataset, UnlearnCollator, pad_examples, validate_lm_dataset
from ..utils import sequence_nll
from .base_config import UnlearnConfig
from .influence_weighting import InfluenceWeighter, InfluenceWeighting
from .trainable import apply_trainable

__all__ = ["UnlearnTrainer", "retain_kl"]


def retain_kl(ref_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(π_ref ‖ π_θ) per next-token position, averaged over labelled positions (`docs/methods.md#retain-terms`).

    Args:
        ref_logits, logits: `(B, T, V)`.
        labels: `(B, T)`, -100 where ignored; the causal shift is applied here.
    """
    mask = labels[:, 1:].ne(-100)  # (B, T-1)
    ref_logps = F.log_softmax(ref_logits[:, :-1].float(), dim=-1)[mask]  # (M, V)
    logps = F.log_softmax(logits[:, :-1].float(), dim=-1)[mask]  # (M, V)
    return F.kl_div(logps, ref_logps, log_target=True, reduction="batchmean")


class _EpochCallback(TrainerCallback):
    """Redraws the forget/retain pairing at each epoch."""

    def __init__(self, dataset: ForgetRetainDataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(state.epoch or 0))


class UnlearnTrainer(Trainer):
    """Base of every unlearning trainer. Subclasses override `compute_loss` only.

    Args:
        model: the model to unlearn (a `PreTrainedModel`, or a PEFT model).
        args: an `UnlearnConfig` subclass.
        forget_dataset: tokenized forget set with `input_ids` and `labels` (-100 on non-targets).
        retain_dataset: tokenized retain set, required when `args.retain_loss != "none"`.
        ref_model: frozen reference for `reference="live"` or a `"kl"` retain term; defaults to a frozen copy of
            `model` (or, for a PEFT model, the same model with its adapter disabled).
        processing_class: the tokenizer (its `pad_token_id` pads batches).
        peft_config: optional `peft.PeftConfig`; the model is wrapped with `get_peft_model`.
    """

    # Subclasses that need π_ref's summed NLL on the forget batch (NPO) set this.
    needs_reference_nll = False
    # Our losses are micro-batch means, so Trainer must divide them by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: PreTrainedModel | torch.nn.Module,
        args: UnlearnConfig,
        forget_dataset: Any,
        retain_dataset: Any | None = None,
        ref_model: PreTrainedModel | None = None,
        processing_class: Any | None = None,
        peft_config: Any | None = None,
        callbacks: list[TrainerCallback] | None = None,
        **kwargs: Any,
    ):
        if not isinstance(args, UnlearnConfig):
            raise TypeError(f"args must be an UnlearnConfig (or a method's config), got {type(args).__name__}.")
        validate_lm_dataset(forget_dataset, "forget")
        if args.retain_loss != "none":
            if retain_dataset is None:
                raise ValueError(
                    f"retain_loss={args.retain_loss!r} needs a retain_dataset (or set retain_loss='none')."
                )
            validate_lm_dataset(retain_dataset, "retain")
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)

        self.pad_token_id = _pad_token_id(model, processing_class)
        seed = args.seed if args.pairing_seed is None else args.pairing_seed
        use_retain = retain_dataset is not None and args.retain_loss != "none"
        train_dataset = ForgetRetainDataset(forget_dataset, retain_dataset if use_retain else None, seed=seed)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            data_collator=UnlearnCollator(self.pad_token_id),
            processing_class=processing_class,
            callbacks=[_EpochCallback(train_dataset), *(callbacks or [])],
            **kwargs,
        )
        self.forget_dataset = forget_dataset
        self._metrics: dict[str, list[float]] = defaultdict(list)

        self.ref_model = None
        needs_live = args.retain_loss == "kl" or (self.needs_reference_nll and args.reference == "live")
        if needs_live and (ref_model is not None or not _is_peft(self.model)):
            self.ref_model = _frozen(ref_model if ref_model is not None else copy.deepcopy(self.model))
            self.ref_model.to(self.args.device)
        self.ref_forget_nll = None
        if self.needs_reference_nll and args.reference == "precomputed":
            self.ref_forget_nll = self.precompute_reference_nll(ref_model)
        self.trainable_names = apply_trainable(
            self.accelerator.unwrap_model(self.model),
            args.trainable,
            args.trainable_patterns,
            args.trainable_last_layers,
            args.trainable_layers_at_depth,
            is_peft=_is_peft(self.accelerator.unwrap_model(self.model)),
        )
        weighting = InfluenceWeighting.from_value(args.influence_weighting)
        self.weighter = InfluenceWeighter(self, weighting) if weighting is not None else None

    # ----- trainable parameters and influence weights ----------------------------------------------------------

    def head_parameters(self) -> list[torch.nn.Parameter]:
        """The LM head's parameters (for a PEFT model with the head in `modules_to_save`: its trainable copy)."""
        head = self.accelerator.unwrap_model(self.model).get_output_embeddings()
        trainable = getattr(head, "modules_to_save", None)  # PEFT's ModulesToSaveWrapper: its trainable copy
        if trainable is not None:
            head = trainable[head.active_adapter if isinstance(head.active_adapter, str) else head.active_adapter[0]]
        return list(head.parameters())

    @property
    def scores(self) -> torch.Tensor | None:
        """Influence scores Δ_i of the forget set (with `influence_weighting`), else None."""
        return self.weighter.scores if self.weighter is not None else None

    @property
    def sample_weights(self) -> torch.Tensor | None:
        """Influence weights ŵ_i of the forget set (with `influence_weighting`), else None."""
        return self.weighter.weights if self.weighter is not None else None

    @property
    def influence_history(self) -> list[dict[str, float]]:
        return self.weighter.history if self.weighter is not None else []

    def forget_weights(self, inputs: dict[str, Any], device: torch.device) -> torch.Tensor | None:
        """ŵ_i of the batch's forget samples, or None without influence weighting (the loss's plain mean)."""
        return self.weighter.batch_weights(inputs, device) if self.weighter is not None else None

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any):
        """Compute (or, when resuming, reload) the influence weights if the method uses them, then train as usual."""
        if self.weighter is not None:
            self.weighter.prepare(resume_from_checkpoint)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    # ----- reference model -------------------------------------------------------------------------------------

    @torch.no_grad()
    def reference_logits(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of the frozen reference: the frozen copy, or the PEFT model with its adapter disabled."""
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if self.ref_model is not None:
            return self.ref_model(**inputs).logits
        if _is_peft(self.accelerator.unwrap_model(model)):
            with self.accelerator.unwrap_model(model).disable_adapter():
                return model(**inputs).logits
        # Only reached before training (precomputation), when the model itself is still the initial model.
        return model(**inputs).logits

    def reference_nll(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """π_ref's summed answer NLL of each forget example in the batch, `(B,)`."""
        if self.ref_forget_nll is not None:
            return self.ref_forget_nll[inputs["index"].cpu()].to(inputs["forget"]["input_ids"].device)
        return sequence_nll(self.reference_logits(model, inputs["forget"]), inputs["forget"]["labels"])[0]

    @torch.no_grad()
    def precompute_reference_nll(self, ref_model: PreTrainedModel | None = None) -> torch.Tensor:
        """One pass over the forget set with the initial model (or `ref_model`): ℓ_ref is constant while unlearning."""
        if ref_model is not None:
            _frozen(ref_model).to(self.args.device)
        was_training = self.model.training
        self.model.eval()
        loader = DataLoader(
            range(len(self.forget_dataset)),
            batch_size=self.args.per_device_eval_batch_size,
            collate_fn=lambda ids: pad_examples([self.forget_dataset[i] for i in ids], self.pad_token_id),
        )
        values = []
        for batch in tqdm(loader, desc="Reference log-probs", disable=not self.is_world_process_zero()):
            batch = {key: value.to(self.args.device) for key, value in batch.items()}
            if ref_model is not None:
                logits = ref_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            else:
                logits = self.reference_logits(self.model, batch)
            values.append(sequence_nll(logits, batch["labels"])[0].float().cpu())
        self.model.train(was_training)
        return torch.cat(values)

    # ----- retain term ---------------------------------------------------------------------------------------

    def retain_term(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """α·Ret(R) on the retain half of the batch (zero when `retain_loss="none"`)."""
        if self.args.retain_loss == "none" or "retain" not in inputs:
            return torch.zeros((), device=self.args.device)
        retain = inputs["retain"]
        outputs = model(input_ids=retain["input_ids"], attention_mask=retain["attention_mask"])
        if self.args.retain_loss == "nll":
            nll, count = sequence_nll(outputs.logits, retain["labels"])
            value = nll.sum() / count.sum()
        else:
            value = retain_kl(self.reference_logits(model, retain), outputs.logits, retain["labels"])
        self.record(f"retain_{self.args.retain_loss}", value)
        return self.args.retain_loss_weight * value

    # ----- logging ---------------------------------------------------------------------------------------------

    def record(self, name: str, value: torch.Tensor | float) -> None:
        """Accumulate a metric; averaged over the micro-batches since the last log and added to the Trainer's log."""
        self._metrics[name].append(float(value.detach().mean()) if torch.is_tensor(value) else float(value))

    def check_finite(self, loss: torch.Tensor) -> torch.Tensor:
        if not torch.isfinite(loss).all():
            raise FloatingPointError(
                f"{type(self).__name__}: the unlearning loss is {loss.item()} at step {self.state.global_step}. "
                "Lower the learning rate, check the inputs for empty label rows, or use bf16 instead of fp16."
            )
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        logs = {**logs, **{name: sum(values) / len(values) for name, values in self._metrics.items() if values}}
        self._metrics.clear()
        super().log(logs, start_time)


def _is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _pad_token_id(model: torch.nn.Module, tokenizer: Any | None) -> int:
    """Pad id from the tokenizer, else the model config; a clear error when neither has one."""
    pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    if pad is None:
        config = getattr(model, "config", None)
        pad = getattr(config, "pad_token_id", None)
    if pad is None:
        raise ValueError(
            "No pad token: the tokenizer (or model.config) has no pad_token_id. Set one, e.g. "
            "`tokenizer.pad_token = tokenizer.eos_token` (padding is masked, so any id works)."
        )
    return int(pad)
