"""A thin `Trainer` base for unlearning: forget/retain routing, the reference model, the retain term, losses
normalised over the whole optimizer step, logging; a method fills in the hooks (`forget_loss`, ...)."""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel, Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.utils import logging

from ..callbacks import EvalMetricsCallback, LabelledPrinterCallback, LabelledProgressCallback
from ..data.chat import prepare_lm_dataset
from ..data.pairing import ForgetRetainDataset, UnlearnCollator, check_token_rows, count_shared_rows, pad_examples
from ..hub import HubMixin
from ..influence import InfluenceWeighting
from ..models import load_model_and_tokenizer
from ..utils import IGNORE_INDEX, sequence_nll
from .base_config import UnlearnConfig
from .influence_weighting import InfluenceWeighter
from .step import ForgetBatch, StepCounts, normalized_sum
from .trainable import apply_trainable

__all__ = ["UnlearnTrainer", "retain_kl"]

logger = logging.get_logger(__name__)


def retain_kl(
    ref_logits: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(π_ref ‖ π_θ) per next-token position, averaged over labelled positions (`docs/methods.md#retain-terms`):
    summed over the batch's labelled positions and divided by `num_items_in_batch` (the optimizer step's count of
    them), or by the batch's own count when it is None.

    Args:
        ref_logits, logits: `(B, T, V)`.
        labels: `(B, T)`, -100 where ignored; the causal shift is applied here.
    """
    mask = labels[:, 1:].ne(IGNORE_INDEX)  # (B, T-1)
    ref_logps = F.log_softmax(ref_logits[:, :-1].float(), dim=-1)[mask]  # (M, V)
    logps = F.log_softmax(logits[:, :-1].float(), dim=-1)[mask]  # (M, V)
    per_position = F.kl_div(logps, ref_logps, log_target=True, reduction="none").sum(-1)  # (M,)
    return normalized_sum(per_position, None, mask.sum() if num_items_in_batch is None else num_items_in_batch)


class _EpochCallback(TrainerCallback):
    """Redraws the forget/retain pairing at each epoch."""

    def __init__(self, dataset: ForgetRetainDataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(state.epoch or 0))


class UnlearnTrainer(HubMixin, Trainer):
    """Base of every unlearning trainer. A method is a config and a loss: it overrides `forget_loss` (and, if it needs
    to, the other hooks below), never `__init__`, `train` or `compute_loss`.

    Hooks (`docs/methods.md#adding-a-method`):
        forget_loss(model, inputs): the forget term of a micro-batch, normalised over the whole optimizer step; most
            methods call `forget_forward` (forward pass, per-sequence NLL, influence weights, reference NLL, logging)
            and a pure loss function on its `ForgetBatch`.
        retain_loss(model, inputs): the retain term (default: α·Ret(R) of the config's `retain_loss`).
        regularizer(model): a term added once per optimizer step (not per item), e.g. IMU's L1 penalty on the head.
        prepare_datasets(forget, retain, args): the training dataset and collator (default: forget examples paired
            with random retain examples).
        prepare_training(resume_from_checkpoint): work before the first step (default: the influence weights).
        method_callbacks(): callbacks the method adds (e.g. a stopping rule).
        steps_per_update(): micro-batches per optimizer step when the method fixes them (IAU: one full pass).

    `compute_loss` adds the terms, scales them so that micro-batch × accumulation × processes give the same update
    (`hf_unlearn.trainers.step`), and refuses a non-finite loss.

    Args:
        model: the model to unlearn (a `PreTrainedModel`, a PEFT model, or a Hub id / local path, loaded with
            `args.model_init_kwargs`).
        args: an `UnlearnConfig` subclass.
        forget_dataset: the forget set: tokenized (`input_ids`, `labels` with -100 on non-targets), or text rows
            (question/answer, TRL `messages`, TRL prompt/completion) that are tokenized here with the processing
            class's chat template, labels on the answer only (`args.dataset_kwargs`).
        retain_dataset: the retain set, in the same forms; required when `args.retain_loss != "none"`.
        ref_model: frozen reference for `reference="live"`, a `"kl"` retain term or `needs_reference_model`;
            defaults to a frozen copy of `model` (or, for a PEFT model, the same model with its adapter disabled).
        processing_class: the tokenizer (its `pad_token_id` pads batches).
        peft_config: optional `peft.PeftConfig`; the model is wrapped with `get_peft_model`.
        eval_dataset: a dataset or a dict of them (`{"forget": ..., "retain": ...}`), in the same forms, giving
            `eval_loss` (`eval_forget_loss`, ...): the mean over examples of the token-mean answer NLL. Default: the
            forget and retain sets. `EvalMetricsCallback`s (e.g. `TofuEvalCallback`) add their metrics.
    """

    # Methods that need π_ref's summed NLL on the forget batch (NPO) set this.
    needs_reference_nll = False
    # Methods that run the frozen reference on every batch whatever `reference` says (UNDIAL's logits, RMU's
    # activations) set this: a frozen copy is kept (or, for a PEFT model, the adapter is disabled).
    needs_reference_model = False
    # Every term is normalised over the whole optimizer step here (`StepCounts`): Trainer must not divide it again.
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: PreTrainedModel | torch.nn.Module,
        args: UnlearnConfig,
        forget_dataset: Any = None,
        retain_dataset: Any | None = None,
        ref_model: PreTrainedModel | str | None = None,
        processing_class: Any | None = None,
        peft_config: Any | None = None,
        callbacks: list[TrainerCallback] | None = None,
        eval_dataset: Any | None = None,
        **kwargs: Any,
    ):
        _check_call(type(self).__name__, args, forget_dataset, retain_dataset, kwargs)
        if isinstance(model, str):
            model, tokenizer = load_model_and_tokenizer(model, **(args.model_init_kwargs or {}))
            processing_class = tokenizer if processing_class is None else processing_class
        if isinstance(ref_model, str):
            ref_model = load_model_and_tokenizer(ref_model, **(args.model_init_kwargs or {}))[0]
        forget_dataset, retain_dataset, eval_dataset = _prepare_text_datasets(
            processing_class, args, forget_dataset, retain_dataset, eval_dataset
        )
        check_model_and_rows(model, {"forget": forget_dataset, "retain": retain_dataset})
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)

        self.pad_token_id = _pad_token_id(model, processing_class)
        train_dataset, data_collator = self.prepare_datasets(forget_dataset, retain_dataset, args)
        epoch_callbacks = [_EpochCallback(train_dataset)] if hasattr(train_dataset, "set_epoch") else []
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            data_collator=data_collator,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=[*epoch_callbacks, *(callbacks or [])],
            **kwargs,
        )
        self.forget_dataset = forget_dataset
        self.retain_dataset = getattr(train_dataset, "retain", retain_dataset)  # the retain rows training uses
        self.step_counts: StepCounts | None = None  # the current optimizer step's counts (None outside training)
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._pending_eval_metrics: dict[str, float] | None = None
        self._label_progress()
        self._set_up_reference(ref_model)
        self._init_hub()  # with push_to_hub: what will be pushed is checked now, not after training
        unwrapped = self.accelerator.unwrap_model(self.model)
        self.trainable_names = apply_trainable(
            unwrapped,
            args.trainable,
            args.trainable_patterns,
            args.trainable_last_layers,
            args.trainable_layers_at_depth,
            is_peft=_is_peft(unwrapped),
        )
        weighting = InfluenceWeighting.from_value(args.influence_weighting)
        self.weighter = InfluenceWeighter(self, weighting) if weighting is not None else None
        for callback in self.method_callbacks():
            self.add_callback(callback)

    def _label_progress(self) -> None:
        """The progress bar and printed logs name the method."""
        label = type(self).__name__.removesuffix("Trainer") or "Unlearn"
        for default, labelled in (
            (ProgressCallback, LabelledProgressCallback),
            (PrinterCallback, LabelledPrinterCallback),
        ):
            if self.callback_handler.pop_callback(default) is not None:
                self.add_callback(labelled(label))

    def _set_up_reference(self, ref_model: torch.nn.Module | None) -> None:
        """The frozen reference where the method needs one live (a `"kl"` retain term, `reference="live"`), or π_ref's
        forget NLLs computed once (`reference="precomputed"`)."""
        args = self.args
        self.ref_model = None
        needs_live = (
            args.retain_loss == "kl"
            or self.needs_reference_model
            or (self.needs_reference_nll and args.reference == "live")
        )
        if needs_live and (ref_model is not None or not _is_peft(self.model)):
            self.ref_model = _frozen(ref_model if ref_model is not None else copy.deepcopy(self.model))
            self.ref_model.to(args.device)
        self.ref_forget_nll = None
        if self.needs_reference_nll and args.reference == "precomputed":
            self.ref_forget_nll = self.precompute_reference_nll(ref_model)

    # ----- hooks of a method -----------------------------------------------------------------------------------

    def forget_loss(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """The forget term of the micro-batch, its share of a mean over the whole optimizer step (every method)."""
        raise NotImplementedError(f"{type(self).__name__} must implement forget_loss(model, inputs).")

    def retain_loss(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """α·Ret(R) on the retain half of the micro-batch (zero when `retain_loss="none"`): the retain NLL per
        labelled token, or KL(π_ref ‖ π_θ) per labelled position, normalised over the step's retain tokens."""
        if self.args.retain_loss == "none" or "retain" not in inputs:
            return torch.zeros((), device=self.args.device)
        retain = inputs["retain"]
        logits, nll, num_tokens = self.retain_forward(model, inputs)
        count = num_tokens.sum()
        num_items = None if self.step_counts is None else self.step_counts.retain("token")
        denominator = count if num_items is None else num_items
        if self.args.retain_loss == "nll":
            value = normalized_sum(nll, None, denominator)
        else:
            value = retain_kl(self.reference_logits(model, retain), logits, retain["labels"], denominator)
        self.record(f"retain_{self.args.retain_loss}", value.detach() * denominator / count)  # the micro-batch's mean
        return self.args.retain_loss_weight * value

    def regularizer(self, model: torch.nn.Module) -> torch.Tensor | None:
        """A term added once per optimizer step, whatever the step's split (None: none)."""
        return None

    def prepare_datasets(self, forget_dataset: Any, retain_dataset: Any | None, args: UnlearnConfig) -> tuple[Any, Any]:
        """`(train_dataset, data_collator)`: each forget example with one random retain example per epoch (when the
        config has a retain term), collated into `{"forget": ..., "retain": ..., "index": ...}`."""
        seed = args.seed if args.pairing_seed is None else args.pairing_seed
        use_retain = retain_dataset is not None and args.retain_loss != "none"
        dataset = ForgetRetainDataset(forget_dataset, retain_dataset if use_retain else None, seed=seed)
        return dataset, UnlearnCollator(self.pad_token_id)

    def prepare_training(self, resume_from_checkpoint: str | bool | None) -> None:
        """Work before the first step: compute (or, when resuming, reload) the influence weights if the method uses
        them."""
        if self.weighter is not None:
            self.weighter.prepare(resume_from_checkpoint)

    def method_callbacks(self) -> list[TrainerCallback]:
        """Callbacks the method adds to the Trainer's."""
        return []

    def steps_per_update(self) -> int | None:
        """Micro-batches per optimizer step when the method fixes them; None keeps `gradient_accumulation_steps`."""
        return None

    # ----- the shared forward pass and the step's normalisation ----------------------------------------------------

    def forget_forward(self, model: torch.nn.Module, inputs: dict[str, Any]) -> ForgetBatch:
        """Forward pass on the forget half, each sequence's summed answer NLL and token count, the influence weights
        and (`needs_reference_nll`) π_ref's NLL; logs `forget_nll` (token mean of the micro-batch)."""
        forget = inputs["forget"]
        logits = model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"]).logits
        nll, num_tokens = sequence_nll(logits, forget["labels"])  # (B,), (B,)
        weights = self.weighter.batch_weights(inputs["index"]) if self.weighter is not None else None
        ref_nll = self.reference_nll(model, inputs) if self.needs_reference_nll else None
        self.record("forget_nll", nll.detach().sum() / num_tokens.sum())
        return ForgetBatch(logits, nll, num_tokens, weights, ref_nll, self.step_counts)

    def retain_forward(self, model: torch.nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """Forward pass on the retain half: `(logits, nll, num_tokens)`, each sequence's summed answer NLL and its
        labelled-token count `(B,)`."""
        retain = inputs["retain"]
        logits = model(input_ids=retain["input_ids"], attention_mask=retain["attention_mask"]).logits
        return (logits, *sequence_nll(logits, retain["labels"]))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """forget_loss + retain_loss (+ the per-step regularizer), scaled so that the step's update is the gradient of
        the step's mean whatever its split: each term is already its micro-batch's share of the mean over every
        process's micro-batches (`num_items_in_batch`, a `StepCounts` from `get_batch_samples`); DDP averages the
        processes' gradients, so the sum is multiplied back by their number. Outside a training step (no
        `StepCounts`) the loss is the micro-batch's own mean."""
        self.step_counts = num_items_in_batch if isinstance(num_items_in_batch, StepCounts) else None
        loss = self.forget_loss(model, inputs) if "forget" in inputs else torch.zeros((), device=self.args.device)
        loss = loss + self.retain_loss(model, inputs)
        if self.step_counts is not None:
            loss = loss * self.accelerator.num_processes
        penalty = self.regularizer(model)
        if penalty is not None:
            loss = loss + penalty / (self.current_gradient_accumulation_steps if self.step_counts is not None else 1)
        loss = self.check_finite(loss)
        return (loss, None) if return_outputs else loss

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Trainer's micro-batches of one optimizer step, with their `StepCounts` (summed over processes) as
        `num_items_in_batch`."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if batch_samples and isinstance(batch_samples[0], dict) and {"forget", "retain"} & set(batch_samples[0]):
            num_items_in_batch = self.count_step(batch_samples, device)
        return batch_samples, num_items_in_batch

    def count_step(self, batch_samples: list[dict[str, Any]], device: torch.device) -> StepCounts:
        """The `StepCounts` of one optimizer step's micro-batches, summed over the launch's processes."""
        local = torch.zeros(5, dtype=torch.float64)
        for batch in batch_samples:
            for offset, half in ((0, "forget"), (2, "retain")):
                if half in batch:
                    labelled = batch[half]["labels"][:, 1:].ne(IGNORE_INDEX)
                    local[offset] += labelled.shape[0]
                    local[offset + 1] += labelled.sum()
            if "forget" in batch and self.weighter is not None:
                local[4] += self.weighter.batch_weights(batch["index"]).double().sum()
        total = local.to(device)
        if self.accelerator.num_processes > 1:
            total = self.accelerator.reduce(total, reduction="sum")
        values = total.tolist()
        return StepCounts(*values[:4], forget_weight=values[4] if self.weighter is not None else None)

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

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any):
        """The method's `prepare_training` (influence weights, ...) and `steps_per_update`, then `Trainer.train`."""
        self.prepare_training(resume_from_checkpoint)
        steps = self.steps_per_update()
        if steps is not None and steps != self.args.gradient_accumulation_steps:
            logger.info(f"{type(self).__name__}: {steps} micro-batches per optimizer step.")
            self.args.gradient_accumulation_steps = steps
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
        if not any(key.startswith("eval_") for key in logs):  # the training metrics go with the training log
            logs = {**logs, **{name: sum(values) / len(values) for name, values in self._metrics.items() if values}}
            self._metrics.clear()
        super().log(logs, start_time)

    # ----- evaluation ------------------------------------------------------------------------------------------

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """`Trainer.evaluate`, plus the metrics of every `EvalMetricsCallback`, computed once per call and added to the
        first dataset's metrics (so they are logged once and `metric_for_best_model` / `EarlyStoppingCallback` see
        them)."""
        if self._pending_eval_metrics is not None:  # one dataset of a dict of evaluation datasets
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        self._pending_eval_metrics = {
            f"{metric_key_prefix}_{name}": value
            for callback in self.callback_handler.callbacks
            if isinstance(callback, EvalMetricsCallback)
            for name, value in callback.compute_metrics(
                self.model, self.processing_class, self.args, self.state
            ).items()
        }
        try:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        finally:
            self._pending_eval_metrics = None

    def evaluation_loop(self, *args: Any, **kwargs: Any):
        output = super().evaluation_loop(*args, **kwargs)
        if self._pending_eval_metrics:
            output.metrics.update(self._pending_eval_metrics)
            self._pending_eval_metrics = {}
        return output

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation batches are plain tokenized rows: the loss is the mean over rows of each row's token-mean answer
        NLL, so the dataset's `eval_loss` is that mean over its examples whatever the batch size."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
            nll, count = sequence_nll(logits, inputs["labels"])
            loss = (nll / count).mean().detach()
        return (loss, None, None) if prediction_loss_only else (loss, logits.detach(), inputs["labels"])


def _is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _check_call(name: str, args: Any, forget_dataset: Any, retain_dataset: Any, kwargs: dict[str, Any]) -> None:
    """The trainer's arguments, before anything loads."""
    if not isinstance(args, UnlearnConfig):
        raise TypeError(f"args must be an UnlearnConfig (or a method's config), got {type(args).__name__}.")
    if forget_dataset is None:
        given = "train_dataset=" if "train_dataset" in kwargs else "no forget_dataset"
        raise TypeError(
            f"{name} got {given}: unlearning trainers take forget_dataset= (what to forget) and "
            "retain_dataset= (what to keep, for the retain term), not train_dataset=."
        )
    if args.retain_loss != "none" and retain_dataset is None:
        raise ValueError(f"retain_loss={args.retain_loss!r} needs a retain_dataset (or set retain_loss='none').")


def _prepare_text_datasets(
    processing_class: Any, args: Any, forget: Any, retain: Any | None, evaluation: Any | None
) -> tuple[Any, Any | None, Any]:
    """Forget, retain and evaluation sets as tokenized rows (text rows are tokenized with the chat template); the
    evaluation default is the forget and retain sets."""
    prepare = lambda data, name: prepare_lm_dataset(data, processing_class, name, **(args.dataset_kwargs or {}))
    forget = prepare(forget, "forget")
    retain = prepare(retain, "retain") if retain is not None else None
    if evaluation is None:
        evaluation = {"forget": forget, **({"retain": retain} if retain is not None else {})}
    elif isinstance(evaluation, dict):
        evaluation = {name: prepare(data, f"{name} evaluation") for name, data in evaluation.items()}
    else:
        evaluation = prepare(evaluation, "evaluation")
    return forget, retain, evaluation


def check_model_and_rows(model: torch.nn.Module, datasets: dict[str, Any]) -> None:
    """Before any work: the model's weights are finite, every row fits its vocabulary and context, and a warning
    counts the forget rows that the retain set holds too."""
    broken = [
        name
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not tensor.isfinite().all()
    ]
    if broken:
        raise ValueError(
            f"The model has non-finite weights (NaN or inf) in {len(broken)} tensor(s), e.g. {broken[0]!r}: "
            "unlearning and influence scores need a working model; load another checkpoint."
        )
    config = getattr(model, "config", None)
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    vocab_size = getattr(embeddings, "num_embeddings", None) or getattr(config, "vocab_size", None)
    # Learned absolute positions (GPT-2's n_positions) cannot go past the context; rotary models degrade instead.
    max_positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    for name, dataset in datasets.items():
        if dataset is not None:
            check_token_rows(dataset, name, vocab_size, max_positions)
    if datasets.get("retain") is not None:
        shared = count_shared_rows(datasets["forget"], datasets["retain"])
        if shared:
            logger.warning(
                f"{shared} of the {len(datasets['forget'])} forget examples are also in the retain set (same tokens): "
                "the retain term pulls them back. Remove them from the retain set unless this is intended."
            )


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
