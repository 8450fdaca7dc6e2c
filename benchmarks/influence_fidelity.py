"""How well do LM-head influence scores rank like full-model influence? (IMU paper §3.3: Spearman 0.992 on CIFAR.)

A tiny GPT-2 (2 layers, width 12, 10 Markov states; ~4k parameters) is trained on the Markov task
(retain ∪ forget-1), then for a forget set of N sequences (half forget-1: seen in training, half forget-2: unseen)
we compute

* head scores Δ_i^c from `lm_head_influence` with curvature fisher_diag / exact / kfac over a damping grid;
* full-model scores Δ_i^full = (1/N) ⟨g_f, (H + λI)⁻¹ G_i⟩ over ALL parameters, with H either the explicit Hessian
  of the mean forget loss (batched double backward) or its Gauss-Newton part GGN (PSD; what kronfluence-style
  influence uses), each eigendecomposed once so every λ is cheap. The Hessian of a non-convex model is indefinite,
  so below λ ≈ |λ_min| its inverse is not meaningful: we report λ_min and the grid anyway;
* the gradient-similarity limit λ → ∞ (H ∝ I) for both.

and report Spearman and Kendall correlations (scipy.stats) between them. Tied (GPT-2 default, like SmolLM2) and
untied embeddings; several seeds. Writes benchmarks/results/influence_fidelity.json.

Run: PYTHONPATH=. python benchmarks/influence_fidelity.py [--seeds 0 1 2] [--num-forget 64]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from hf_unlearn.influence import compute_influence
from hf_unlearn.runtime.io import atomic_write_json
from hf_unlearn.tasks.markov.data import make_markov_datasets

RESULTS = Path(__file__).resolve().parent / "results" / "influence_fidelity.json"
LENGTH = 12
HEAD_RELATIVE = [1e-3, 1e-2, 1e-1, 1.0]  # λ = α · mean diag(H_head)
HEAD_ABSOLUTE = [1e-4, 1e-3, 1e-2]  # the IMU authors' code: 0.01 absolute on the Fisher diagonal
FULL_RELATIVE = [1e-3, 1e-2, 1e-1, 1.0]  # λ = α · mean diag(H_full or GGN); Hessian also λ = 2|λ_min|


def train_original(tied: bool, seed: int, data, steps: int, width: int, log) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=10,
        n_embd=width,
        n_layer=2,
        n_head=2,
        n_positions=LENGTH,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=tied,
        attn_implementation="eager",
    )
    model = GPT2LMHeadModel(config)
    train = torch.cat(
        [torch.tensor(data["retain_train"]["input_ids"]), torch.tensor(data["forget1_train"]["input_ids"])]
    )
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, eps=1e-6, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        batch = train[torch.randint(0, len(train), (128,), generator=g)]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 200 == 0 or step == steps - 1:
            log(f"    train step {step}: loss {loss.item():.4f}")
    return model.double().eval()


def full_model_pieces(model: GPT2LMHeadModel, ids: torch.Tensor, chunk: int = 256):
    """Over every parameter θ (tied weights once): per-sample gradients G `(N, P)`, the Hessian H `(P, P)` of the
    mean forget loss, and its Gauss-Newton part GGN = (1/N) Σ_i Σ_t c_t J_tᵀ [diag(p_t) − p_t p_tᵀ] J_t (PSD)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])
    n, length = ids.shape
    weight = 1.0 / (n * (length - 1))  # c_t / N: every next state is a target

    def unflatten(flat):
        out, k = {}, 0
        for name, shape in zip(names, shapes):
            size = int(np.prod(shape))
            out[name] = flat[k : k + size].view(shape)
            k += size
        return out

    def logits_of(flat):
        return torch.func.functional_call(model, unflatten(flat), (ids,)).logits[:, :-1]  # (N, T-1, V)

    def mean_loss(flat):  # ℓ_i = mean NLL over the sequence's targets; then mean over samples
        return F.cross_entropy(logits_of(flat).transpose(1, 2), ids[:, 1:], reduction="none").mean(1).mean(0)

    # Hessian rows by batched double backward (much cheaper here than vmap over forward-over-reverse)
    flat = theta.clone().requires_grad_(True)
    grad = torch.autograd.grad(mean_loss(flat), flat, create_graph=True)[0]  # (P,)
    eye = torch.eye(theta.numel(), dtype=theta.dtype)
    rows = [
        torch.autograd.grad(grad, flat, eye[k : k + chunk], retain_graph=True, is_grads_batched=True)[0]
        for k in range(0, theta.numel(), chunk)
    ]
    hessian = torch.cat(rows).detach()  # (P, P)
    del grad, rows

    # logit Jacobian J (N·(T-1)·V, P), then GGN and the per-sample gradients from it
    flat = theta.clone().requires_grad_(True)
    logits = logits_of(flat)  # (N, T-1, V)
    vocab = logits.shape[-1]
    out = logits.reshape(-1)
    eye = torch.eye(out.numel(), dtype=theta.dtype)
    jac = torch.cat(
        [
            torch.autograd.grad(out, flat, eye[k : k + chunk], retain_graph=True, is_grads_batched=True)[0]
            for k in range(0, out.numel(), chunk)
        ]
    ).view(n * (length - 1), vocab, -1)  # (M, V, P)
    del eye
    probs = torch.softmax(logits.detach(), -1).reshape(-1, vocab)  # (M, V)
    p_jac = torch.einsum("mv,mvp->mp", probs, jac)  # (M, P)
    s_jac = probs[:, :, None] * (jac - p_jac[:, None, :])  # (M, V, P) [diag(p) − ppᵀ] J
    ggn = weight * jac.reshape(-1, jac.shape[-1]).T @ s_jac.reshape(-1, jac.shape[-1])  # (P, P)
    del s_jac
    errors = probs.clone()
    errors[torch.arange(len(errors)), ids[:, 1:].reshape(-1)] -= 1.0  # (M, V) p − e_y
    grads = torch.einsum("mv,mvp->mp", errors, jac).view(n, length - 1, -1).mean(1)  # (N, P)
    flat = theta.clone().requires_grad_(True)
    grad_check = float(
        (grads.mean(0) - torch.autograd.grad(mean_loss(flat), flat)[0]).abs().max()
    )  # J-based vs autograd
    return grads, 0.5 * (hessian + hessian.T), 0.5 * (ggn + ggn.T), grad_check


def correlations(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    return {"spearman": float(stats.spearmanr(a, b).statistic), "kendall": float(stats.kendalltau(a, b).statistic)}


def run_one(tied: bool, seed: int, num_forget: int, steps: int, width: int, log) -> dict:
    data = make_markov_datasets(num_retain=2000, num_forget1=1000, num_forget2=1000, length=LENGTH, seed=seed)
    t0 = time.perf_counter()
    model = train_original(tied, seed, data, steps, width, log)
    half = num_forget // 2
    forget = [
        {"input_ids": r, "labels": r}
        for r in data["forget1_train"]["input_ids"][:half] + data["forget2_train"]["input_ids"][: num_forget - half]
    ]
    ids = torch.tensor([r["input_ids"] for r in forget])
    with torch.no_grad():
        forget_loss = model(input_ids=ids, labels=ids).loss.item()
    train_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    grads, hessian, ggn, grad_check = full_model_pieces(model, ids)
    g_f = grads.mean(0)
    n = len(forget)
    full: dict[str, tuple[float, np.ndarray]] = {}
    spectra = {}
    for kind, matrix in (("hessian", hessian), ("ggn", ggn)):
        eigvals, eigvecs = torch.linalg.eigh(matrix)
        proj_g, proj_grads = eigvecs.T @ g_f, grads @ eigvecs  # (P,), (N, P)
        mean_diag = float(matrix.diagonal().mean())
        lam_min = float(eigvals.min())
        spectra[kind] = {
            "min_eigenvalue": lam_min,
            "max_eigenvalue": float(eigvals.max()),
            "mean_diagonal": mean_diag,
            "negative_eigenvalues": int((eigvals < -1e-10 * float(eigvals.max())).sum()),
        }
        lams = {f"{kind}/rel_{a:g}": a * mean_diag for a in FULL_RELATIVE}
        if kind == "hessian":
            lams["hessian/shift_2|lmin|"] = 2 * abs(lam_min)  # the smallest shift that makes H + λI safely PD
        for key, lam in lams.items():
            full[key] = (lam, ((proj_grads / (eigvals + lam)) @ proj_g / n).numpy())
    full["identity"] = (float("inf"), (grads @ g_f / n).numpy())  # λ → ∞, up to the factor 1/λ
    full_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    head: dict[str, tuple[float, np.ndarray]] = {}
    for curvature in ("fisher_diag", "exact", "kfac"):
        for a in HEAD_RELATIVE:
            res = compute_influence(model, forget, curvature=curvature, damping=a, progress_bar=False, batch_size=32)
            head[f"{curvature}/rel_{a:g}"] = (res.damping, res.scores.numpy())
        for lam in HEAD_ABSOLUTE:
            res = compute_influence(
                model,
                forget,
                curvature=curvature,
                damping=lam,
                relative_damping=False,
                progress_bar=False,
                batch_size=32,
            )
            head[f"{curvature}/abs_{lam:g}"] = (lam, res.scores.numpy())
    # λ → ∞: gradient similarity on the head (any curvature, damping 1e12 absolute, rescaled)
    res = compute_influence(
        model, forget, curvature="fisher_diag", damping=1e12, relative_damping=False, progress_bar=False
    )
    head["identity"] = (float("inf"), res.scores.numpy())
    head_seconds = time.perf_counter() - t0

    table = []
    for hk, (hlam, hs) in head.items():
        for fk, (flam, fs) in full.items():
            table.append({"head": hk, "head_lambda": hlam, "full": fk, "full_lambda": flam, **correlations(hs, fs)})
    fisher_vs_exact = {}
    for tag in [f"rel_{a:g}" for a in HEAD_RELATIVE] + [f"abs_{lam:g}" for lam in HEAD_ABSOLUTE]:
        fisher_vs_exact[tag] = correlations(head[f"fisher_diag/{tag}"][1], head[f"exact/{tag}"][1])
        fisher_vs_exact[tag]["kfac_vs_exact"] = correlations(head[f"kfac/{tag}"][1], head[f"exact/{tag}"][1])
    seen = np.array([1] * half + [0] * (num_forget - half))
    positive = {
        k: {
            "positive_fraction": float((s > 0).mean()),  # seen − unseen, in units of the scores' std
            "seen_minus_unseen_over_std": float((s[seen == 1].mean() - s[seen == 0].mean()) / s.std()),
        }
        for k, (_, s) in {**head, **full}.items()
        if k.endswith("rel_0.1") or k == "identity"
    }
    return {
        "tied_embeddings": tied,
        "seed": seed,
        "num_parameters": int(hessian.shape[0]),
        "full_gradient_check_max_abs": grad_check,
        "head_parameters": int(model.lm_head.weight.numel()),
        "forget_loss": forget_loss,
        "full_spectra": spectra,
        "correlations": table,
        "fisher_vs_exact_head": fisher_vs_exact,
        "score_summary": positive,
        "seconds": {"train": train_seconds, "full_model": full_seconds, "head_all_variants": head_seconds},
    }


def summarise(runs: list[dict]) -> dict:
    """Mean ± std over seeds: every head variant against the main full-model references, and fisher vs exact."""
    out = {}
    for tied in (True, False):
        rs = [r for r in runs if r["tied_embeddings"] == tied]
        if not rs:
            continue
        block: dict[str, dict] = {}
        heads = dict.fromkeys(c["head"] for c in rs[0]["correlations"])
        for full_key in [
            "ggn/rel_0.001",
            "ggn/rel_0.01",
            "ggn/rel_0.1",
            "ggn/rel_1",
            "hessian/rel_0.01",
            "hessian/rel_1",
            "hessian/shift_2|lmin|",
            "identity",
        ]:
            for hk in heads:
                vals = [c for r in rs for c in r["correlations"] if c["head"] == hk and c["full"] == full_key]
                sp = np.array([c["spearman"] for c in vals])
                kt = np.array([c["kendall"] for c in vals])
                block[f"{hk} vs full {full_key}"] = {
                    "spearman_mean": float(sp.mean()),
                    "spearman_std": float(sp.std()),
                    "kendall_mean": float(kt.mean()),
                    "n_seeds": len(vals),
                }
        for tag in rs[0]["fisher_vs_exact_head"]:
            sp = np.array([r["fisher_vs_exact_head"][tag]["spearman"] for r in rs])
            block[f"head fisher_diag vs exact ({tag})"] = {
                "spearman_mean": float(sp.mean()),
                "spearman_std": float(sp.std()),
            }
        out["tied" if tied else "untied"] = block
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-forget", type=int, default=64)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--width", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)  # the CPU is shared: 2 threads thrash
    parser.add_argument("--out", type=Path, default=RESULTS)
    cli = parser.parse_args()
    torch.set_num_threads(cli.threads)
    hf_logging.set_verbosity_error()
    start = time.perf_counter()
    load_start = os.getloadavg()
    runs = []
    for tied in (True, False):
        for seed in cli.seeds:
            print(f"tied={tied} seed={seed}", flush=True)
            runs.append(run_one(tied, seed, cli.num_forget, cli.steps, cli.width, lambda s: print(s, flush=True)))
    payload = {
        "benchmark": "influence_fidelity",
        "question": "Does LM-head influence rank forget samples like full-model influence? (IMU paper: Spearman 0.992)",
        "settings": {
            "model": f"GPT2LMHeadModel(vocab 10, n_embd {cli.width}, n_layer 2, n_head 2, n_positions {LENGTH}), float64 for scoring",
            "training": f"AdamW lr 5e-3, batch 128, {cli.steps} steps on retain ∪ forget-1 Markov sequences",
            "forget_set": f"{cli.num_forget} sequences of length {LENGTH}: half forget-1 (seen), half forget-2 (unseen)",
            "head_damping_relative": HEAD_RELATIVE,
            "head_damping_absolute": HEAD_ABSOLUTE,
            "full_damping_relative": FULL_RELATIVE,
            "full_model": "explicit Hessian and Gauss-Newton matrix (GGN, PSD) of the mean forget loss over all "
            "parameters; λ added to every eigenvalue; 'identity' = gradient similarity (λ → ∞)",
            "seeds": cli.seeds,
        },
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": cli.threads,
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
            "cpu_count": os.cpu_count(),
        },
        "summary": summarise(runs),
        "runs": runs,
        "seconds_total": time.perf_counter() - start,
    }
    atomic_write_json(cli.out, payload)
    print(f"wrote {cli.out}")
    for variant, block in payload["summary"].items():
        print(f"== {variant}")
        for k, v in block.items():
            print(f"  {k}: " + ", ".join(f"{a}={b:.3f}" if isinstance(b, float) else f"{a}={b}" for a, b in v.items()))


if __name__ == "__main__":
    main()
