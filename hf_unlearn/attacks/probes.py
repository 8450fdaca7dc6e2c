"""Probes: ways of asking an unlearned model that change no weight.

- `logit_lens`: the hidden state after each layer, through the final norm and the output head: does the answer
  become likely before the last layer (knowledge hidden by the last layers rather than removed)?
- `prefix_probe`: the answer's first k tokens given, the rest scored.
- `few_shot_probe`: other rows (retain facts, say) prepended as context, the row itself scored.
- `token_loss`: the plain token-mean NLL of rows, for rows asked another way (TOFU's paraphrased questions).

Rows are `{"input_ids", "labels"}` token lists, labels −100 where nothing is scored; the next-token shift happens here.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..data.pairing import pad_examples
from ..utils import IGNORE_INDEX

__all__ = ["few_shot_probe", "lens_logits", "logit_lens", "prefix_probe", "token_loss"]


def _final_norm(model: torch.nn.Module) -> torch.nn.Module:
    """The norm between the last layer and the output head (GPT-2's `ln_f`, Llama's `norm`, GPT-NeoX's ...)."""
    body = model.base_model if hasattr(model, "base_model") else model
    for name in ("ln_f", "norm", "final_layer_norm", "final_layernorm"):
        module = getattr(body, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise ValueError(f"no final norm found on {type(body).__name__} (looked for ln_f, norm, final_layer_norm).")


def lens_logits(hidden: torch.Tensor, norm: torch.nn.Module, head: torch.nn.Module) -> torch.Tensor:
    """Logits an intermediate hidden state `(B, T, D)` would give if it were the last one: head(norm(hidden))."""
    return head(norm(hidden))


def _targets(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return batch["labels"][:, 1:]  # (B, T-1): position t predicts token t+1


@torch.no_grad()
def logit_lens(
    model: torch.nn.Module, examples: list[dict[str, Any]], pad_token_id: int, batch_size: int = 256
) -> list[dict[str, float]]:
    """Per layer (0 = embeddings, ..., L = the model's output): the token-mean NLL of the labelled tokens (`loss`),
    the share ranked first (`top1`) and their mean rank (`rank`, 0 = first), reading each layer through the final
    norm and the output head. The last entry is the model's own output (its hidden state is already normalised)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    norm, head = _final_norm(model), model.get_output_embeddings()
    sums: dict[int, dict[str, float]] = {}
    count = 0
    for start in range(0, len(examples), batch_size):
        batch = pad_examples(examples[start : start + batch_size], pad_token_id)
        out = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            output_hidden_states=True,
        )
        targets = _targets(batch).to(device)
        mask = targets.ne(IGNORE_INDEX)  # (B, T-1)
        gold = targets.clamp(min=0).unsqueeze(-1)
        count += int(mask.sum())
        last = len(out.hidden_states) - 1
        for layer, hidden in enumerate(out.hidden_states):
            logits = out.logits if layer == last else lens_logits(hidden, norm, head)
            logits = logits[:, :-1].float()  # (B, T-1, V)
            logps = F.log_softmax(logits, dim=-1)
            gold_logit = logits.gather(-1, gold)  # (B, T-1, 1)
            rank = (logits > gold_logit).sum(-1)  # (B, T-1)
            entry = sums.setdefault(layer, {"loss": 0.0, "top1": 0.0, "rank": 0.0})
            entry["loss"] += float(-logps.gather(-1, gold).squeeze(-1)[mask].sum())
            entry["top1"] += float(rank.eq(0)[mask].sum())
            entry["rank"] += float(rank[mask].float().sum())
    model.train(was_training)
    return [{"layer": layer, **{key: value / count for key, value in entry.items()}} for layer, entry in sums.items()]


@torch.no_grad()
def token_loss(
    model: torch.nn.Module, examples: list[dict[str, Any]], pad_token_id: int, batch_size: int = 256
) -> float:
    """Token-mean NLL of the labelled tokens of `examples`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = pad_examples(examples[start : start + batch_size], pad_token_id)
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits[:, :-1]
        targets = _targets(batch).to(device)
        mask = targets.ne(IGNORE_INDEX)
        nll = F.cross_entropy(logits.float().transpose(1, 2), targets.clamp(min=0), reduction="none")  # (B, T-1)
        total += float(nll[mask].sum())
        count += int(mask.sum())
    model.train(was_training)
    return total / count


def prefix_probe(
    model: torch.nn.Module, examples: list[dict[str, Any]], prefix_tokens: int, pad_token_id: int, batch_size: int = 256
) -> float:
    """Token-mean NLL of each row's labelled tokens after its first `prefix_tokens` ones, which become context.

    Under teacher forcing this equals the plain loss on those positions; the probe matters where the answer is
    generated after the prefix, or to compare an answer's tail with its start."""
    rows = []
    for example in examples:
        labels = list(example["labels"])
        scored = [i for i, label in enumerate(labels) if label != IGNORE_INDEX and i > 0]
        hidden = set(scored[:prefix_tokens])
        rows.append({**example, "labels": [IGNORE_INDEX if i in hidden else label for i, label in enumerate(labels)]})
    rows = [row for row in rows if any(label != IGNORE_INDEX for label in row["labels"][1:])]
    if not rows:
        raise ValueError(f"no row has more than {prefix_tokens} scored tokens.")
    return token_loss(model, rows, pad_token_id, batch_size)


def few_shot_probe(
    model: torch.nn.Module,
    examples: list[dict[str, Any]],
    context: list[int],
    pad_token_id: int,
    batch_size: int = 256,
) -> float:
    """Token-mean NLL of each row's labelled tokens with the token ids `context` (a few other rows, joined)
    prepended, unscored."""
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    rows = [
        {
            "input_ids": list(context) + list(example["input_ids"]),
            # The row's first token stays unscored, as without context: the same tokens are compared.
            "labels": [IGNORE_INDEX] * (len(context) + 1) + list(example["labels"])[1:],
        }
        for example in examples
    ]
    longest = max(len(row["input_ids"]) for row in rows)
    if limit is not None and longest > limit:
        raise ValueError(f"context and row need {longest} positions; the model has {limit}.")
    return token_loss(model, rows, pad_token_id, batch_size)
