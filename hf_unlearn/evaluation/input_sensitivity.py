"""Input sensitivity of a causal LM: how strongly each output at each position responds to the input embeddings.

MU-Mis (arXiv:2402.11441) unlearns by lowering the relative input sensitivity R = ‖∇_x f_c‖² − ‖∇_x f_{c'}‖² of the
forget samples (c the labelled next token, c' another output); its premise is that training raises R on the training
data. These functions measure the quantities involved, so the premise can be checked on a model
(`benchmarks/mumis_premise_markov.py` does it on the Markov task).
"""

from __future__ import annotations

import torch

__all__ = ["jacobian_norms", "relative_magnitudes"]


def jacobian_norms(
    model, input_ids: torch.Tensor, positions: list[int] | None = None, batch_size: int = 250
) -> dict[str, torch.Tensor]:
    """‖∇_x f_k(t)‖²_F for every sequence, answer position t in `positions` (None: all; t predicts state t + 1) and
    output k, with x the sequence's input embeddings `(T, d)` and f the logits or the log-probs at t. Returns
    `(N, P, V)` tensors."""
    positions = list(range(input_ids.shape[1] - 1)) if positions is None else positions
    embedding = model.get_input_embeddings()
    out: dict[str, list[torch.Tensor]] = {"logit": [], "logprob": []}
    for start in range(0, len(input_ids), batch_size):
        ids = input_ids[start : start + batch_size]  # (B, T)
        embeds = embedding(ids).detach().requires_grad_(True)  # (B, T, d)
        logits = model(inputs_embeds=embeds).logits  # (B, T, V)
        vocab = logits.shape[-1]
        eye = torch.eye(vocab, dtype=logits.dtype)[:, None, :].expand(
            vocab, len(ids), vocab
        )  # (V, B, V): one output k per row
        per_position = {"logit": [], "logprob": []}
        for t in positions:
            (jac,) = torch.autograd.grad(logits[:, t], embeds, eye, retain_graph=True, is_grads_batched=True)
            probs = logits[:, t].detach().softmax(-1)  # (B, V)
            # ∇ log p_k = ∇ f_k − Σ_j p_j ∇ f_j: the log-prob Jacobian from the logit one.
            mean_grad = torch.einsum("kbtd,bk->btd", jac, probs)  # (B, T, d)
            per_position["logit"].append(jac.pow(2).sum((2, 3)).T)  # (B, V)
            per_position["logprob"].append((jac - mean_grad[None]).pow(2).sum((2, 3)).T)  # (B, V)
        for name, values in per_position.items():
            out[name].append(torch.stack(values, 1))  # (B, P, V)
    return {name: torch.cat(values) for name, values in out.items()}


def relative_magnitudes(
    norms: torch.Tensor, labels: torch.Tensor, num_states: int, seed: int, positions: list[int] | None = None
) -> dict:
    """Per sequence (mean over the measured positions): S_c, S_{c'} for a random other output, the mean S over the
    other states, and R for both choices of c'."""
    generator = torch.Generator().manual_seed(seed)
    targets = labels[:, 1:] if positions is None else labels[:, 1:][:, positions]  # (N, P)
    vocab = norms.shape[-1]
    others = (targets + torch.randint(1, vocab, targets.shape, generator=generator)) % vocab  # (N, P)
    target = norms.gather(-1, targets[..., None]).squeeze(-1)  # (N, T-1)
    other = norms.gather(-1, others[..., None]).squeeze(-1)  # (N, T-1)
    states = norms[..., :num_states]  # (N, T-1, S): the padding id left out
    other_states = (states.sum(-1) - target) / (num_states - 1)  # (N, T-1)
    return {
        "target": target.mean(1),
        "other_random": other.mean(1),
        "other_states_mean": other_states.mean(1),
        "R_random": (target - other).mean(1),
        "R_states_mean": (target - other_states).mean(1),
    }
