"""LM-head influence: float64 equivalence with brute force (autograd head gradients and Hessians), invariances,
IMU weights against hand-computed values, storage, and the error cases. Tiny models; the file runs in seconds."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_unlearn.influence import (
    CausalLMHeadTask,
    InfluenceArguments,
    InfluenceMismatchError,
    compute_influence,
    dataset_fingerprint,
    influence_weights,
    lm_head_influence,
    load_influence,
    save_influence,
)
from hf_unlearn.influence.curvature import ExactHessian
from hf_unlearn.utils import IGNORE_INDEX

transformers = pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

transformers.logging.set_verbosity_error()

VOCAB, WIDTH = 11, 8
FAST = {"progress_bar": False}


def tiny_gpt2(*, tied: bool = True, bias: bool = False, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_embd=WIDTH,
        n_layer=1,
        n_head=2,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=tied,
    )
    model = GPT2LMHeadModel(config)
    if bias:
        model.lm_head = nn.Linear(WIDTH, VOCAB, bias=True)
        nn.init.normal_(model.lm_head.bias, std=0.5)
    return model.double().eval()


def make_rows(n: int = 7, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    """Variable-length rows; a random prefix is prompt (label −100)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(4, 12, (1,), generator=g))
        ids = torch.randint(0, VOCAB, (length,), generator=g)
        labels = ids.clone()
        labels[: int(torch.randint(1, length - 1, (1,), generator=g))] = IGNORE_INDEX
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def head_features(model: nn.Module, row: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t from `output_hidden_states` (independent of the engine's hook), at labelled shifted positions."""
    out = model(input_ids=row["input_ids"][None], output_hidden_states=True)
    targets = row["labels"][1:]
    keep = targets.ne(IGNORE_INDEX)
    return out.hidden_states[-1][0, :-1][keep].detach(), targets[keep]


def brute_force_scores(model, rows, weight, bias, curvature, damping=0.1, relative=True) -> torch.Tensor:
    """Δ_i = (1/N) g_fᵀ H⁻¹ G_i with G_i from autograd and H explicit (P×P)."""
    feats = [head_features(model, r) for r in rows]
    w_aug = torch.cat([weight, bias[:, None]], 1) if bias is not None else weight
    vocab, d1 = w_aug.shape
    theta = w_aug.detach().reshape(-1).clone()

    def augment(h):
        return torch.cat([h, torch.ones(h.shape[0], 1, dtype=h.dtype)], 1) if bias is not None else h

    def loss(t, h, y):  # ℓ_i = mean NLL over labelled tokens
        return F.cross_entropy(augment(h) @ t.view(vocab, d1).T, y)

    grads = torch.stack([_grad(loss, theta, h, y) for h, y in feats])  # (N, P)
    n = len(rows)
    g_f = grads.mean(0)
    eye = torch.eye(theta.numel(), dtype=theta.dtype)
    if curvature == "fisher_diag":
        base = torch.diag((grads * grads).mean(0))
    elif curvature == "exact":
        base = torch.func.hessian(mean_loss(feats, augment, vocab))(theta)
    else:  # kfac: diag(s) ⊗ C
        s = torch.zeros(vocab, dtype=theta.dtype)
        c = torch.zeros(d1, d1, dtype=theta.dtype)
        for h, _ in feats:
            ha = augment(h)
            p = torch.softmax(ha @ w_aug.detach().T, -1)
            s += (p - p * p).mean(0) / n
            c += ha.T @ ha / ha.shape[0] / n
        base = torch.kron(torch.diag(s), c)
    lam = damping * base.diagonal().mean() if relative else damping
    return grads @ torch.linalg.solve(base + lam * eye, g_f) / n


def mean_loss(feats, augment, vocab):
    """θ ↦ (1/N) Σ_i ℓ_i as one token-weighted cross-entropy (c_t = 1/|y_i|), fast under torch.func."""
    h = torch.cat([augment(h) for h, _ in feats])  # (M, d1)
    y = torch.cat([y for _, y in feats])  # (M,)
    c = torch.cat([torch.full((len(y),), 1.0 / len(y), dtype=h.dtype) for _, y in feats])  # (M,)

    def loss(t):
        return (c * F.cross_entropy(h @ t.view(vocab, -1).T, y, reduction="none")).sum() / len(feats)

    return loss


def _grad(loss, theta, h, y):
    t = theta.clone().requires_grad_(True)
    return torch.autograd.grad(loss(t, h, y), t)[0]


def assert_close(actual, expected, rtol=1e-9):
    scale = expected.abs().max()
    assert float((actual - expected).abs().max()) <= rtol * float(scale), (actual, expected)


CURVATURES = ["fisher_diag", "exact", "kfac"]


@pytest.mark.parametrize("curvature", CURVATURES)
@pytest.mark.parametrize("variant", ["tied", "untied_bias"])
def test_matches_brute_force(curvature, variant):
    model = tiny_gpt2(tied=variant == "tied", bias=variant == "untied_bias")
    rows = make_rows()
    scores = lm_head_influence(model, rows, curvature=curvature, batch_size=3, **FAST)
    head = model.lm_head
    expected = brute_force_scores(
        model, rows, head.weight.detach(), None if head.bias is None else head.bias.detach(), curvature
    )
    assert scores.dtype == torch.float64 and scores.shape == (len(rows),)
    assert_close(scores, expected)


@pytest.mark.parametrize("curvature", CURVATURES)
def test_absolute_damping_matches_brute_force(curvature):
    model = tiny_gpt2(bias=True, tied=False)
    rows = make_rows(5, seed=3)
    scores = lm_head_influence(model, rows, curvature=curvature, damping=1e-3, relative_damping=False, **FAST)
    expected = brute_force_scores(
        model, rows, model.lm_head.weight.detach(), model.lm_head.bias.detach(), curvature, damping=1e-3, relative=False
    )
    assert_close(scores, expected)


def test_exact_hessian_matches_autograd():
    """The assembled (P, P) head Hessian is the autograd Hessian of the mean forget loss."""
    model = tiny_gpt2(tied=False, bias=True)
    rows = make_rows(4)
    result = compute_influence(model, rows, curvature="exact", damping=1e-3, relative_damping=False, **FAST)
    assert result.damping == 1e-3 and result.num_tokens == sum(int(r["labels"][1:].ne(-100).sum()) for r in rows)
    # rebuild the accumulator through the engine's own path: recompute with a probe
    feats = [head_features(model, r) for r in rows]
    w = torch.cat([model.lm_head.weight, model.lm_head.bias[:, None]], 1).detach()
    acc = ExactHessian(VOCAB, WIDTH + 1, torch.float64, torch.device("cpu"))
    for h, y in feats:
        ha = torch.cat([h, torch.ones(h.shape[0], 1, dtype=h.dtype)], 1)
        p = torch.softmax(ha @ w.T, -1)
        acc.update(p, y, ha, torch.full((h.shape[0],), 1.0 / h.shape[0], dtype=h.dtype), torch.tensor([h.shape[0]]))
    acc.finalize(len(rows), 0.0, relative=False)

    def loss(t):  # a plain Python sum over samples, as literal as possible
        return sum(
            F.cross_entropy(torch.cat([h, torch.ones(h.shape[0], 1, dtype=h.dtype)], 1) @ t.view(VOCAB, -1).T, y)
            for h, y in feats
        ) / len(rows)

    expected = torch.func.hessian(loss)(w.reshape(-1).clone())
    assert_close(acc.hessian(), expected, rtol=1e-12)


def test_peft_modules_to_save_and_lora_head():
    peft = pytest.importorskip("peft")
    rows = make_rows(6, seed=5)
    # head trained as a full copy (modules_to_save), body with LoRA
    config = peft.LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True, modules_to_save=["lm_head"])
    model = peft.get_peft_model(tiny_gpt2(tied=False), config).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.add_(0.3 * torch.randn_like(p))
    active = model.base_model.model.lm_head.modules_to_save["default"].weight.detach()
    scores = lm_head_influence(model, rows, **FAST)
    assert_close(scores, brute_force_scores(model, rows, active, None, "fisher_diag"))
    # LoRA on the head itself: the engine must use W + ΔW, read off the merged model
    model = peft.get_peft_model(tiny_gpt2(tied=False), peft.LoraConfig(r=2, target_modules=["lm_head"])).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.3 * torch.randn_like(p))
    scores = lm_head_influence(model, rows, curvature="exact", **FAST)
    merged = copy.deepcopy(model).merge_and_unload()
    assert_close(scores, brute_force_scores(merged, rows, merged.lm_head.weight.detach(), None, "exact"), rtol=1e-8)


@pytest.mark.parametrize("curvature", CURVATURES)
def test_batching_padding_and_caching_invariance(curvature):
    """Same scores whatever the batch size, order, padding, memory chunking or feature caching."""
    model = tiny_gpt2(tied=False, bias=True)
    rows = make_rows(9, seed=7)
    reference = lm_head_influence(model, rows, curvature=curvature, batch_size=1, sort_by_length=False, **FAST)
    for kwargs in (
        {"batch_size": 9},
        {"batch_size": 4, "sort_by_length": False, "cache_features": False},
        {"batch_size": 9, "max_chunk_bytes": 1},
    ):  # one sample per head-math block
        assert_close(lm_head_influence(model, rows, curvature=curvature, **kwargs, **FAST), reference, rtol=1e-10)
    # explicit right padding with a zero attention mask changes nothing
    padded = [
        {
            "input_ids": torch.cat([r["input_ids"], torch.full((3,), 5)]),
            "labels": torch.cat([r["labels"], torch.full((3,), IGNORE_INDEX)]),
            "attention_mask": torch.cat([torch.ones_like(r["input_ids"]), torch.zeros(3, dtype=torch.long)]),
        }
        for r in rows
    ]
    assert_close(lm_head_influence(model, padded, curvature=curvature, batch_size=4, **FAST), reference, rtol=1e-10)


def test_datasets_input_float32_and_mode_restored():
    datasets = pytest.importorskip("datasets")
    model = tiny_gpt2()
    rows = make_rows(6)
    ref64 = lm_head_influence(model, rows, **FAST)
    ds = datasets.Dataset.from_list([{k: v.tolist() for k, v in r.items()} for r in rows])
    model32 = copy.deepcopy(model).float().train()
    scores32 = lm_head_influence(model32, ds, batch_size=4, **FAST)
    assert scores32.dtype == torch.float32
    assert_close(scores32.double(), ref64, rtol=1e-4)
    assert all(m.training for m in model32.modules())
    model32.transformer.h[0].training = False  # per-module modes come back as they were
    lm_head_influence(model32, ds, **FAST)
    assert not model32.transformer.h[0].training and model32.training


class _RecomputeLogitsTask(CausalLMHeadTask):
    """Never hands the head's logits to the engine, which must then recompute them as W̃ h̃."""

    def select(self, batch, hidden, logits=None):
        return super().select(batch, hidden, None)


def test_logits_reuse_matches_recompute_and_bf16_runs():
    model = tiny_gpt2(tied=False, bias=True)
    rows = make_rows(6, seed=9)
    for curvature in CURVATURES:
        reused = lm_head_influence(model, rows, curvature=curvature, cache_features=False, **FAST)
        recomputed = lm_head_influence(model, rows, curvature=curvature, task=_RecomputeLogitsTask(), **FAST)
        assert_close(recomputed, reused, rtol=1e-12)
    # a bf16 model: head math in float32 from the bf16 features (logits recomputed, not reused)
    scores = lm_head_influence(copy.deepcopy(model).to(torch.bfloat16), rows, **FAST)
    assert scores.dtype == torch.float32 and bool(torch.isfinite(scores).all())
    reference = lm_head_influence(model, rows, **FAST)
    assert float(torch.corrcoef(torch.stack([scores.double(), reference]))[0, 1]) > 0.9


def test_helpful_duplicates_score_positive():
    """Sanity of the sign: on a forget set made of copies of one sample, every copy helps fit it."""
    model = tiny_gpt2()
    row = make_rows(1)[0]
    scores = lm_head_influence(model, [row] * 4, **FAST)
    assert bool((scores > 0).all()) and torch.allclose(scores, scores[0].expand(4))


# ---- influence_weights ------------------------------------------------------------------------------------------

SCORES = torch.tensor([4.0, 1.0, -2.0, 9.0, 0.0], dtype=torch.float64)


@pytest.mark.parametrize(
    "psi, raw",
    [
        ("none", [4.0, 1.0, 0.0, 9.0, 0.0]),
        ("sqrt", [2.0, 1.0, 0.0, 3.0, 0.0]),
        ("tanh", [math.tanh(4 / 9), math.tanh(1 / 9), 0.0, math.tanh(1.0), 0.0]),
        ("exp", [math.exp(4 / 9), math.exp(1 / 9), 0.0, math.exp(1.0), 0.0]),
    ],
)
def test_influence_weights_psi(psi, raw):
    raw = torch.tensor(raw, dtype=torch.float64)
    expected = raw * 3 / raw.sum()  # mean 1 over the 3 positive samples
    weights = influence_weights(SCORES, psi=psi)
    assert torch.allclose(weights, expected, rtol=1e-12, atol=0)
    assert weights[[2, 4]].eq(0).all()


def test_influence_weights_top_ratio_and_clip():
    # top 40 % of 5 = 2 samples: indices 3 (9) and 0 (4); sqrt -> 3, 2 -> mean 1: 1.2, 0.8
    expected = torch.tensor([0.8, 0, 0, 1.2, 0], dtype=torch.float64)
    assert torch.allclose(influence_weights(SCORES, top_ratio=0.4), expected)
    # at least one sample is kept
    assert torch.equal(influence_weights(SCORES, top_ratio=0.01), torch.tensor([0, 0, 0, 1.0, 0], dtype=torch.float64))
    # top-k counts non-positive samples too: top 80 % = 4 samples -> {3, 0, 1, 4}, of which 3 are positive
    assert torch.allclose(influence_weights(SCORES, top_ratio=0.8), influence_weights(SCORES))
    # float rounding: 0.1 * 30 keeps 3, not 4
    assert int(influence_weights(torch.arange(30.0, 0, -1), top_ratio=0.1).gt(0).sum()) == 3
    # clip at the 0.5 quantile of sqrt values {2, 1, 3} = 2 -> {2, 1, 2}, mean 5/3
    expected = torch.tensor([2.0, 1.0, 0.0, 2.0, 0.0], dtype=torch.float64) * 3 / 5
    assert torch.allclose(influence_weights(SCORES, clip_quantile=0.5), expected)
    # linear interpolation: 0.75 quantile of {1, 2, 3} is 2.5
    expected = torch.tensor([2.0, 1.0, 0.0, 2.5, 0.0], dtype=torch.float64) * 3 / 5.5
    assert torch.allclose(influence_weights(SCORES, clip_quantile=0.75), expected)
    # tanh/exp are invariant to the scale of the scores (they see w / max w)
    for psi in ("tanh", "exp", "sqrt", "none"):
        assert torch.allclose(influence_weights(SCORES * 1e-7, psi=psi), influence_weights(SCORES, psi=psi))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scores": torch.tensor([])}, "empty"),
        ({"scores": torch.tensor([1.0, float("nan")])}, "NaN or infinite"),
        ({"scores": torch.tensor([1.0, float("inf")])}, "NaN or infinite"),
        ({"scores": torch.tensor([-1.0, 0.0, -3.0])}, r"0 of 3 have"),
        ({"scores": SCORES, "psi": "log"}, r"'none', 'sqrt', 'tanh', 'exp'"),
        ({"scores": SCORES, "top_ratio": 0.0}, "top_ratio"),
        ({"scores": SCORES, "clip_quantile": 1.5}, "clip_quantile"),
    ],
)
def test_influence_weights_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        influence_weights(**kwargs)


# ---- errors of the engine ---------------------------------------------------------------------------------------


def test_engine_errors():
    model = tiny_gpt2()
    rows = make_rows(3)
    with pytest.raises(ValueError, match="empty"):
        lm_head_influence(model, [], **FAST)
    with pytest.raises(ValueError, match=r"'fisher_diag', 'exact', 'kfac'"):
        lm_head_influence(model, rows, curvature="hessian", **FAST)
    with pytest.raises(TypeError, match="Unknown influence argument"):
        lm_head_influence(model, rows, dampnig=0.1)
    with pytest.raises(ValueError, match="use curvature='fisher_diag'"):
        lm_head_influence(model, rows, curvature="exact", exact_max_params=50, **FAST)
    unlabelled = rows + [{"input_ids": torch.tensor([1, 2, 3]), "labels": torch.tensor([1, -100, -100])}]
    with pytest.raises(ValueError, match=r"1 sample\(s\) have no labelled target.*\[3\]"):
        lm_head_influence(model, unlabelled, **FAST)
    with pytest.raises(ValueError, match="token ids in"):
        lm_head_influence(model, [{"input_ids": [1, 2, 3], "labels": [1, 2, VOCAB]}], **FAST)
    with pytest.raises(ValueError, match="needs 'input_ids' and 'labels'"):
        lm_head_influence(model, [{"input_ids": [1, 2, 3]}], **FAST)
    with pytest.raises(ValueError, match="damping"):
        InfluenceArguments(damping=-1.0)
    with pytest.raises(ValueError, match="zero entries"):  # an unused input dimension has no curvature
        lm_head_influence(_with_dead_feature(model), rows, damping=0.0, relative_damping=False, **FAST)


def _with_dead_feature(model):
    """ln_f zeroes input dimension 0 of the head: that column of W gets no gradient, so F has zero entries."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.transformer.ln_f.weight[0] = 0.0
        model.transformer.ln_f.bias[0] = 0.0
    return model


def test_nonlinear_head_is_rejected():
    model = tiny_gpt2(tied=False)
    model.lm_head = nn.Sequential(nn.Linear(WIDTH, VOCAB), nn.Tanh()).double()
    with pytest.raises(ValueError, match="not the affine map"):
        lm_head_influence(model, make_rows(3), **FAST)


# ---- storage ----------------------------------------------------------------------------------------------------


def test_save_load_round_trip_and_refusal(tmp_path):
    rows = make_rows(4)
    args = InfluenceArguments(curvature="fisher_diag", damping=0.1, progress_bar=False)
    scores = lm_head_influence(tiny_gpt2(), rows, args)
    weights = influence_weights(scores)
    path = tmp_path / "ckpt" / "influence.safetensors"
    fp = dataset_fingerprint(rows)
    save_influence(path, scores, args, fingerprint=fp, weights=weights)
    record = load_influence(path, InfluenceArguments(damping=0.1, batch_size=2), fingerprint=fp)  # batch size: fine
    assert torch.equal(record.scores, scores) and torch.equal(record.weights, weights)
    assert record.args == args and record.fingerprint == fp
    with pytest.raises(InfluenceMismatchError, match="damping: saved 0.1 vs requested 0.01"):
        load_influence(path, InfluenceArguments(damping=0.01))
    with pytest.raises(InfluenceMismatchError, match="curvature"):
        load_influence(path, InfluenceArguments(curvature="kfac"))
    with pytest.raises(InfluenceMismatchError, match="fingerprint"):
        load_influence(path, args, fingerprint=dataset_fingerprint(make_rows(4, seed=2)))
    assert dataset_fingerprint([{k: v.tolist() for k, v in r.items()} for r in rows]) == fp
