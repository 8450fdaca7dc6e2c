"""PDU: flatten the forget answers' logits under a constraint on the retain loss, by primal–dual updates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .base_trainer import UnlearnTrainer
from .step import normalized_sum
from .token_terms import answer_positions, token_mean

__all__ = ["PDUTrainer", "pdu_constraint", "pdu_dual_update", "pdu_loss"]

DUAL_FILE_NAME = "pdu_dual.json"


def pdu_loss(
    logits: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """L_f = (1/N)·Σ_{t∈A} (max_v z_{t,v} − mean_v z_{t,v})², the forget term of PDU (Entesari et al., "Constrained
    Entropic Unlearning: A Primal-Dual Framework for Large Language Models", arXiv:2506.05314).

    Args:
        logits: `(B, T, V)` the scores that predict each answer token; mask: `(B, T)` the labelled positions A.
        weights: `(B,)` influence weights ŵ_i, or None.
        num_items_in_batch: N, the step's labelled forget tokens (Σ ŵ with weights); None: this batch's own.
    """
    logits = logits.float()
    spread = logits.amax(-1) - logits.mean(-1)  # (B, T)
    return token_mean(spread.pow(2), mask, weights, num_items_in_batch)


def pdu_constraint(
    nll: torch.Tensor,
    num_tokens: torch.Tensor,
    dual: float,
    bound: float,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """λ·(CE(R) − ε): the micro-batch's share of the constraint term, (λ/N)·Σ_i (ℓ_i − ε·|y_i|) with N the step's
    retain tokens, so that the shares of a step add up to λ·(CE(R) − ε).

    Args:
        nll: `(B,)` summed NLL of each retain sequence; num_tokens: `(B,)` their labelled tokens.
        dual: λ ≥ 0; bound: ε.
        num_items_in_batch: N; None: this batch's own tokens.
    """
    denominator = num_tokens.sum() if num_items_in_batch is None else num_items_in_batch
    return dual * normalized_sum(nll - bound * num_tokens, None, denominator)


def pdu_dual_update(dual: float, retain_loss: float, bound: float, step_size: float) -> float:
    """λ ← max(0, λ + η·(CE(R) − ε)): projected dual ascent."""
    return max(0.0, dual + step_size * (retain_loss - bound))


class _DualCallback(TrainerCallback):
    """Updates λ once per optimizer step and saves it next to every checkpoint."""

    def __init__(self, trainer: PDUTrainer):
        self.trainer = trainer

    def on_step_begin(self, args, state, control, **kwargs):
        self.trainer.step_epoch = state.epoch or 0.0

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.update_dual()

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if self.trainer.is_world_process_zero() and folder.is_dir():
            (folder / DUAL_FILE_NAME).write_text(json.dumps({"dual": self.trainer.dual}), encoding="utf-8")


class PDUTrainer(UnlearnTrainer):
    """PDU (Entesari et al., "Constrained Entropic Unlearning: A Primal-Dual Framework for Large Language Models",
    arXiv:2506.05314). No reference model.

    λ is updated once per optimizer step, from the step's retain NLL (over every micro-batch and process), so the
    update does not depend on how the step is split (the reference toolkit updates it after every micro-batch); it
    is saved with each checkpoint (`pdu_dual.json`) and reloaded when resuming. The forget term uses the logits that
    predict the answer tokens (the reference's mask is one position off). Logs `forget_nll`, `retain_nll` and
    `pdu/dual` (λ after the step).

    Example:
    ```python
    >>> from hf_unlearn import PDUConfig, PDUTrainer
    >>> args = PDUConfig(output_dir="pdu", retain_loss_bound=0.3, retain_loss_weight=100.0, dual_step_size=5.0)
    >>> PDUTrainer(model, args, forget_dataset=forget, retain_dataset=retain).train()
    ```
    """

    def method_callbacks(self):
        self.dual = float(self.args.retain_loss_weight)
        self.step_epoch = 0.0
        self._step_retain = torch.zeros((), device=self.args.device, dtype=torch.float64)
        return [_DualCallback(self)]

    def prepare_training(self, resume_from_checkpoint):
        super().prepare_training(resume_from_checkpoint)
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = get_last_checkpoint(self.args.output_dir)
        saved = Path(checkpoint) / DUAL_FILE_NAME if checkpoint else None
        if saved is not None and saved.is_file():
            self.dual = float(json.loads(saved.read_text(encoding="utf-8"))["dual"])

    def update_dual(self) -> None:
        """After an optimizer step: λ ← max(0, λ + η·(CE(R) − ε)) with the step's retain NLL, past the warm-up."""
        retain = float(self.accelerator.reduce(self._step_retain.clone(), reduction="sum"))
        self._step_retain.zero_()
        if math.floor(self.step_epoch + 1e-6) >= self.args.dual_warmup_epochs:
            args = self.args
            self.dual = pdu_dual_update(self.dual, retain, args.retain_loss_bound, args.dual_step_size)
        self.record("pdu/dual", self.dual)

    def forget_loss(self, model, inputs):
        batch = self.forget_forward(model, inputs)
        logits, _, mask = answer_positions(batch.logits, inputs["forget"]["labels"])
        return self.args.forget_loss_weight * pdu_loss(logits, mask, batch.weights, batch.num_items("token"))

    def retain_loss(self, model, inputs):
        if "retain" not in inputs:
            return torch.zeros((), device=self.args.device)
        _, nll, num_tokens = self.retain_forward(model, inputs)  # (B,), (B,)
        count = num_tokens.sum()
        denominator = count if self.step_counts is None else self.step_counts.retain("token")
        share = normalized_sum(nll.detach(), None, denominator)  # this micro-batch's part of the step's CE(R)
        if self.step_counts is not None:
            self._step_retain += share.double()
        self.record("retain_nll", share * denominator / count)
        return pdu_constraint(nll, num_tokens, self.dual, self.args.retain_loss_bound, denominator)
