"""MU-Mis: unlearn by rolling back the forget set's input sensitivity to its labelled tokens (a double backward)."""

from __future__ import annotations

import inspect
import logging

import numpy as np
import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from ..utils import IGNORE_INDEX
from .base_trainer import UnlearnTrainer, _is_peft
from .gradient_restriction import double_backward_attention
from .step import normalized_sum

__all__ = ["MUMisTrainer", "input_sensitivities", "mumis_loss"]

logger = logging.getLogger(__name__)


def mumis_loss(
    target_sensitivity: torch.Tensor,
    other_sensitivity: torch.Tensor,
    example: torch.Tensor,
    num_examples: int,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L = mean_x mean_{t∈x} (‖∇_x f_{c_t}‖² − ‖∇_x f_{c'_t}‖²) (MU-Mis eq. 1 per answer position, averaged).

    Args:
        target_sensitivity, other_sensitivity: `(M,)` squared norms of the input gradients of the labelled token's
            output and of the random other token's, one per (sequence, position) row.
        example: `(M,)` the sequence (0..num_examples-1) each row belongs to.
        num_items_in_batch: the sequences of the whole optimizer step (the mean over x is over the step); None:
            this batch's `num_examples`.

    Returns:
        `(loss, per_example)`: the loss and each sequence's mean over its positions, `(num_examples,)`.
    """
    difference = target_sensitivity - other_sensitivity  # (M,)
    totals = difference.new_zeros(num_examples).index_add(0, example, difference)  # (N,)
    counts = torch.bincount(example, minlength=num_examples).clamp(min=1).to(difference.dtype)  # (N,)
    per_example = totals / counts
    return normalized_sum(per_example, None, num_items_in_batch), per_example


def input_sensitivities(
    model: torch.nn.Module,
    embedding: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    positions: torch.Tensor,
    targets: torch.Tensor,
    others: torch.Tensor,
    output: str = "logit",
    create_graph: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """‖∇_x f_c‖²_F and ‖∇_x f_{c'}‖²_F of every row, with x the row's input embeddings `(T, d)` and f the output
    (logit or log-prob) at the row's position; plus the NLL of the labelled token there, detached.

    Each row is one (sequence, position) pair, the sequence repeated once per position: rows do not interact, so the
    gradient of Σ_rows f w.r.t. the embeddings holds each row's own ∇_x f, one backward for all. With
    `create_graph=True` the norms stay differentiable in the parameters (the double backward).

    Args:
        input_ids, attention_mask: `(M, T)`.
        positions: `(M,)` position t whose output is differentiated (it predicts the token at t + 1).
        targets, others: `(M,)` the labelled token c and the other token c'.
    """
    embeds = embedding(input_ids)  # (M, T, d)
    if not embeds.requires_grad:  # frozen input embeddings (head-only, LoRA): differentiate w.r.t. them anyway
        embeds = embeds.detach().requires_grad_(True)
    rows = torch.arange(len(positions), device=positions.device)
    kept = torch.unique(positions)  # (K,) sorted: only these positions go through the (large) output layer
    kwargs = {"logits_to_keep": kept} if _accepts_logits_to_keep(model) else {}
    logits = model(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs).logits
    index = torch.searchsorted(kept, positions) if kwargs else positions
    logits = _at_least_fp32(logits[rows, index])  # (M, V)
    logps = F.log_softmax(logits, dim=-1)
    outputs = logps if output == "logprob" else logits
    target_output = outputs.gather(-1, targets[:, None]).squeeze(-1)  # (M,)
    other_output = outputs.gather(-1, others[:, None]).squeeze(-1)  # (M,)
    (target_grad,) = torch.autograd.grad(target_output.sum(), embeds, create_graph=create_graph, retain_graph=True)
    (other_grad,) = torch.autograd.grad(other_output.sum(), embeds, create_graph=create_graph)
    token_nll = -logps.detach().gather(-1, targets[:, None]).squeeze(-1)  # (M,)
    return _at_least_fp32(target_grad).pow(2).sum((1, 2)), _at_least_fp32(other_grad).pow(2).sum((1, 2)), token_nll


def _at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """Half precision upcast to fp32 for the squares and softmax; fp32 / fp64 unchanged."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    model = getattr(model, "module", model)  # DDP
    if _is_peft(model):
        model = model.get_base_model()
    return "logits_to_keep" in inspect.signature(model.forward).parameters


class _StoppingCallback(TrainerCallback):
    """Algorithm 1's stopping rule: check the objective's drop every `stop_check_steps` steps or every epoch."""

    def __init__(self, trainer: MUMisTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        if args.stop_check_steps is not None and state.global_step % args.stop_check_steps == 0:
            self.trainer.check_stopping(control)

    def on_epoch_end(self, args, state, control, **kwargs):
        if args.stop_check_steps is None:
            self.trainer.check_stopping(control)


class MUMisTrainer(UnlearnTrainer):
    """MU-Mis (Cheng, Huang, Huang, "Machine Unlearning by Suppressing Sample Contribution": §3, eq. 1, Algorithm 1),
    for causal LMs: each answer position of a forget sequence is one classification, x its input embeddings, c the
    labelled next token, c' a uniformly random other token redrawn every step (drawn per example from (seed, step,
    example index), so the draws do not depend on how a step is split). Minimising ‖∇_x f_c‖² − ‖∇_x f_{c'}‖²
    makes the model's output at the labelled token less, and at other tokens more, sensitive to the input, as for data
    it never saw. Retain-free.

    Every step differentiates the input gradients again (create_graph): about 3x a GA step per row, with one row per
    chosen position, so `positions_per_sequence=k` (k random positions per sequence) is the cheap variant
    (`docs/methods.md#mu-mis` has measured costs). With `stop_threshold` δ the objective L̃_0 is measured on the
    initial model before the first step (on a resumed run: on the resumed model), and training stops once the mean
    objective of the steps since the last check has dropped by δ (`stop_history` keeps every check). Logs
    `forget_nll` (at the chosen positions), `mumis/objective`, `mumis/target_sensitivity`, `mumis/other_sensitivity`.

    Example:
    ```python
    >>> from hf_unlearn import MUMisConfig, MUMisTrainer
    >>> args = MUMisConfig(output_dir="mumis", positions_per_sequence=4, stop_threshold=0.5, max_steps=30)
    >>> MUMisTrainer(model, args, forget_dataset=forget).train()
    ```
    """

    initial_objective: float | None = None

    def method_callbacks(self):
        self.stop_history: list[dict[str, float]] = []
        self._window: list[float] = []
        return [_StoppingCallback(self)]

    def prepare_training(self, resume_from_checkpoint):
        super().prepare_training(resume_from_checkpoint)
        if self.args.stop_threshold is not None:
            self.initial_objective = self.measure_initial_objective()
            self.stop_history = [{"step": 0, "objective": self.initial_objective, "drop": 0.0}]

    @property
    def output_size(self) -> int:
        """Number of tokens the model scores (c' is drawn among the others)."""
        model = self.accelerator.unwrap_model(self.model)
        weight = getattr(model.get_output_embeddings(), "weight", None)
        return int(weight.shape[0]) if weight is not None else int(model.config.vocab_size)

    def sample_rows(self, labels: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The (sequence, position, c, c') rows of a batch: every answer position, or `positions_per_sequence` of
        them drawn per sequence; c' uniform over the tokens other than c. Each sequence's draws come from
        `(seed, global step, its index in the forget set)`. All `(M,)`, on `labels`' device."""
        answer = labels[:, 1:].ne(IGNORE_INDEX).cpu()  # (B, T-1): position t predicts labels[:, t + 1]
        rows, positions, offsets = [], [], []
        for example, (mask, position) in enumerate(zip(answer, index.tolist())):
            rng = np.random.default_rng([self.args.seed, self.state.global_step, position])
            candidates = mask.nonzero().flatten()
            k = self.args.positions_per_sequence
            if k is not None and k < len(candidates):
                candidates = candidates[torch.from_numpy(rng.permutation(len(candidates))[:k])].sort().values
            rows.append(torch.full_like(candidates, example))
            positions.append(candidates)
            offsets.append(torch.from_numpy(rng.integers(1, self.output_size, len(candidates))))
        rows, positions = torch.cat(rows), torch.cat(positions)
        targets = labels.cpu()[rows, positions + 1]
        others = (targets + torch.cat(offsets)) % self.output_size
        return tuple(t.to(labels.device) for t in (rows, positions, targets, others))

    def objective(
        self,
        model: torch.nn.Module,
        batch: dict[str, torch.Tensor],
        index: torch.Tensor,
        create_graph: bool = True,
        num_items_in_batch: float | None = None,
    ):
        """`(loss, per_example, target_sensitivity, other_sensitivity, token_nll)` of a forget batch whose rows are
        the forget set's `index`."""
        rows, positions, targets, others = self.sample_rows(batch["labels"], index)
        embedding = self.accelerator.unwrap_model(model).get_input_embeddings()
        with double_backward_attention():
            target, other, token_nll = input_sensitivities(
                model,
                embedding,
                batch["input_ids"][rows],
                batch["attention_mask"][rows],
                positions,
                targets,
                others,
                self.args.sensitivity_output,
                create_graph=create_graph,
            )
        loss, per_example = mumis_loss(target, other, rows, len(batch["input_ids"]), num_items_in_batch)
        return loss, per_example, target, other, token_nll

    # ----- Algorithm 1's stopping rule ------------------------------------------------------------------------

    def measure_initial_objective(self) -> float:
        """L̃_0: the mean per-example objective of the (first `initial_objective_examples`) forget examples, at the
        current model, in the mode the steps run in (dropout as in training); averaged over processes."""
        from ..data.pairing import pad_examples

        count = min(len(self.forget_dataset), self.args.initial_objective_examples or len(self.forget_dataset))
        size = self.args.per_device_train_batch_size
        total = 0.0
        self.model.train()
        for start in range(0, count, size):
            index = torch.arange(start, min(count, start + size))
            examples = [self.forget_dataset[i] for i in index.tolist()]
            batch = {k: v.to(self.args.device) for k, v in pad_examples(examples, self.pad_token_id).items()}
            total += float(self.objective(self.model, batch, index, create_graph=False)[1].sum())
        value = torch.tensor([total / count], device=self.args.device)
        return float(self.accelerator.reduce(value, reduction="mean"))

    def check_stopping(self, control) -> None:
        """Stop once ΔL̃ ≥ δ, with L̃ the mean objective since the last check (over every process)."""
        if self.args.stop_threshold is None or not self._window:
            return
        window = torch.tensor([sum(self._window), len(self._window)], device=self.args.device, dtype=torch.float64)
        total, count = self.accelerator.reduce(window, reduction="sum").tolist()
        self._window.clear()
        current = total / count
        drop = self.initial_objective - current
        if self.args.stop_threshold_type == "relative":
            drop /= max(abs(self.initial_objective), 1e-12)
        self.stop_history.append({"step": self.state.global_step, "objective": current, "drop": drop})
        self.record("mumis/objective_drop", drop)
        if drop >= self.args.stop_threshold:
            logger.info(
                "MU-Mis: objective drop %.4g >= δ = %g at step %d: stopping.",
                drop,
                self.args.stop_threshold,
                self.state.global_step,
            )
            control.should_training_stop = True

    # ----- loss ------------------------------------------------------------------------------------------------

    def forget_loss(self, model, inputs):
        num_items = None if self.step_counts is None else self.step_counts.forget_sequences
        loss, per_example, target, other, token_nll = self.objective(
            model, inputs["forget"], inputs["index"], num_items_in_batch=num_items
        )
        self._window.extend(per_example.detach().float().cpu().tolist())
        self.record("forget_nll", token_nll.mean())
        self.record("mumis/objective", per_example.detach().mean())
        self.record("mumis/target_sensitivity", target.detach().mean())
        self.record("mumis/other_sensitivity", other.detach().mean())
        return loss
