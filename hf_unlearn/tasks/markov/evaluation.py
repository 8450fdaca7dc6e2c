"""Evaluation of the synthetic Markov-chain task (`docs/metrics.md#markov`): losses, KL to the retrained model, KL to
the true chain, after every unlearning step."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from ...data.pairing import pad_examples
from ...evaluation.metrics import kl_per_position, value_at_level
from ...utils import IGNORE_INDEX
from .data import CHAINS, transition_matrix

__all__ = ["MarkovEvalCallback", "MarkovEvaluator", "next_token_logprobs", "retain_kl_at_forget_kl"]


@torch.no_grad()
def next_token_logprobs(model: torch.nn.Module, examples: Any, pad_token_id: int, batch_size: int = 1024):
    """Next-state log-probabilities over the whole vocabulary, `(N, T-1, V)`, and the targets `(N, T-1)`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logps, targets = [], []
    for start in range(0, len(examples), batch_size):
        batch = pad_examples(examples[start : start + batch_size], pad_token_id)
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits
        logps.append(F.log_softmax(logits[:, :-1].float(), dim=-1).cpu())  # (b, T-1, V)
        targets.append(batch["labels"][:, 1:])  # (b, T-1)
    model.train(was_training)
    return _cat_padded(logps, 0.0), _cat_padded(targets, IGNORE_INDEX)


class MarkovEvaluator:
    """Scores a model on the retain and forget test sets against the retrained model and the true chains.

    The retrained model's distributions are computed once; each call then costs one forward pass over the test sets.
    Keys: `retain_loss`, `forget_loss` (token-mean CE, ℓ_r / ℓ_f), `retain_kl`, `forget_kl` (mean per-position
    KL(π_retrained ‖ π_θ) over labelled positions, ℓ_r^KL / ℓ_f^KL), `retain_truth_kl`, `forget_truth_kl` (KL from the
    true transition row of the sequence's chain), and the same per forget chain (`forget1_loss`, ...).
    """

    def __init__(
        self,
        test_sets: dict[str, Any],
        retrained_model: torch.nn.Module | None,
        pad_token_id: int,
        leakage: float = 0.2,
        num_states: int = 10,
        batch_size: int = 1024,
    ):
        self.test_sets = {name: list(dataset) for name, dataset in test_sets.items()}
        self.pad_token_id = pad_token_id
        self.batch_size = batch_size
        self.truth = {}
        self.reference = {}
        for name, examples in self.test_sets.items():
            logps, _targets = (
                next_token_logprobs(retrained_model, examples, pad_token_id, batch_size)
                if retrained_model is not None
                else (None, None)
            )
            self.reference[name] = logps
            states = torch.tensor(_padded([example["input_ids"] for example in examples], 0))[:, :-1]  # (N, T-1)
            rows = torch.tensor(transition_matrix(CHAINS[name], num_states, leakage), dtype=torch.float32)
            self.truth[name] = rows[states].log()  # (N, T-1, num_states): true next-state log-probs

    def __call__(self, model: torch.nn.Module) -> dict[str, float | None]:
        per_chain = {}
        for name, examples in self.test_sets.items():
            logps, targets = next_token_logprobs(model, examples, self.pad_token_id, self.batch_size)
            mask = targets.ne(IGNORE_INDEX)  # (N, T-1)
            num_states = self.truth[name].shape[-1]
            per_chain[name] = {
                "loss": -logps.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)[mask],  # (M,)
                "truth_kl": kl_per_position(self.truth[name], logps[..., :num_states])[mask],
            }
            if self.reference[name] is not None:
                per_chain[name]["kl"] = kl_per_position(self.reference[name], logps)[mask]
        groups = {"retain": ["retain"], "forget": [name for name in per_chain if name != "retain"]}
        groups.update({name: [name] for name in per_chain if name != "retain"})
        metrics = {}
        for group, names in groups.items():
            for key in ("loss", "kl", "truth_kl"):
                values = [per_chain[name][key] for name in names if key in per_chain[name]]
                metrics[f"{group}_{key}"] = torch.cat(values).mean().item() if values else None
        return metrics


class MarkovEvalCallback(TrainerCallback):
    """Evaluates before the first step and after every optimiser step, keeping the history for trade-off curves.

    `seconds` is the time spent evaluating, so callers can report the unlearning time alone. With
    `stop_at_forget_kl`, training ends after the first step whose forget KL reaches that level.
    """

    def __init__(self, evaluator: MarkovEvaluator, stop_at_forget_kl: float | None = None):
        self.evaluator = evaluator
        self.stop_at_forget_kl = stop_at_forget_kl
        self.history: list[dict[str, float]] = []
        self.seconds = 0.0

    def _evaluate(self, step: int, model: torch.nn.Module) -> None:
        tick = time.perf_counter()
        self.history.append({"step": step, **self.evaluator(model)})
        self.seconds += time.perf_counter() - tick

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._evaluate(0, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._evaluate(state.global_step, model)
        level = self.stop_at_forget_kl
        if level is not None and (self.history[-1]["forget_kl"] or 0.0) >= level:
            control.should_training_stop = True
        return control


def retain_kl_at_forget_kl(history: list[dict[str, float]], level: float) -> float | None:
    """Retain KL where the trajectory first reaches forget KL `level` (linear between steps); None if it never does.

    Comparing methods at matched forgetting is the fair reading of a trade-off: a method that forgets less always
    keeps the retain set better.
    """
    return value_at_level(history, "forget_kl", "retain_kl", level)


def _padded(rows: list[list[int]], value: int) -> list[list[int]]:
    length = max(len(row) for row in rows)
    return [list(row) + [value] * (length - len(row)) for row in rows]


def _cat_padded(tensors: list[torch.Tensor], value: float) -> torch.Tensor:
    """Concatenate batches along dim 0, right-padding dim 1 (batches may differ in length)."""
    length = max(t.shape[1] for t in tensors)
    return torch.cat([F.pad(t, (0, 0) * (t.dim() - 2) + (0, length - t.shape[1]), value=value) for t in tensors])
