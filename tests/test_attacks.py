"""The attacks of `hf_unlearn.attacks` on tiny models: recovery, relearning, quantization, probes."""

import copy
import importlib.util
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from hf_unlearn.attacks import (
    AttackArguments,
    RelearnArguments,
    few_shot_probe,
    logit_lens,
    prefix_probe,
    quantize,
    quantized_code_change,
    recovery,
    recovery_rows,
    relearn,
    relearn_split,
    rtn_codes,
    rtn_fake_quant,
    token_loss,
)
from hf_unlearn.attacks.quantization import dequantized_weights
from hf_unlearn.data.pairing import pad_examples

from .conftest import PAD, lm_dataset, tiny_gpt2

HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None
HAS_TORCHAO = importlib.util.find_spec("torchao") is not None
HAS_GPTQ = all(importlib.util.find_spec(name) is not None for name in ("optimum", "gptqmodel"))
ROWS = [[1, 2, 3, 4, 5, 6], [7, 8, 9, 1, 2], [3, 3, 4, 4, 5, 5, 6], [0, 1, 0, 1]]


def _rows(prompt_length=0):
    return list(lm_dataset(ROWS, prompt_length))


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ------------------------------------------------------------------------------------------------------- recovery


def test_recovery_is_zero_when_nothing_changes_and_one_at_the_original():
    unlearned = {"forget_loss": 3.0, "forget_prob": 0.1}
    original = {"forget_loss": 1.0, "forget_prob": 0.9}
    assert recovery(unlearned, unlearned, original) == {"forget_loss": 0.0, "forget_prob": 0.0}
    assert recovery(original, unlearned, original) == {"forget_loss": 1.0, "forget_prob": 1.0}
    # Halfway back by hand: loss 3 -> 2.5 of the way to 1 is 0.25; probability 0.1 -> 0.5 of the way to 0.9 is 0.5.
    halfway = recovery({"forget_loss": 2.5, "forget_prob": 0.5}, unlearned, original)
    assert halfway["forget_loss"] == pytest.approx(0.25) and halfway["forget_prob"] == pytest.approx(0.5)


def test_recovery_is_none_without_a_gap_or_a_value():
    assert recovery({"m": 1.0}, {"m": 2.0}, {"m": 2.0}) == {"m": None}
    assert recovery({"m": None}, {"m": 2.0}, {"m": 1.0}) == {"m": None}
    assert recovery({"m": 1.0}, {"m": 2.0}, {"m": 1.0}, keys=["m", "other"]) == {"m": 1.0, "other": None}


def test_recovery_rows_pair_each_checkpoint_with_the_retrained_control():
    base = {
        "unlearned": {"forget_loss": 3.0, "retain_loss": 1.0},
        "original": {"forget_loss": 1.0, "retain_loss": 0.9},
        "retrained": {"forget_loss": 2.0, "retain_loss": 0.9},
    }
    attacked = {
        "relearn/forget_subset": {
            "checkpoints": [
                {"step": 0, "forget_loss": 3.0, "retain_loss": 1.0},
                {"step": 10, "forget_loss": 2.0, "retain_loss": 1.2},
            ]
        },
        "quant4": {"metrics": {"forget_loss": 1.0, "retain_loss": 1.0}},
    }
    control = {
        "relearn/forget_subset": {"checkpoints": [{"step": 0, "forget_loss": 2.0}, {"step": 10, "forget_loss": 1.5}]},
        "quant4": {"metrics": {"forget_loss": 2.0}},
    }
    rows = recovery_rows(attacked, base, ["forget_loss"], ["retain_loss"], control)
    assert [(row["attack"], row["step"]) for row in rows] == [
        ("relearn/forget_subset", 0),
        ("relearn/forget_subset", 10),
        ("quant4", None),
    ]
    assert rows[1]["recovery"] == {"forget_loss": 0.5}
    assert rows[1]["retrained_recovery"] == {"forget_loss": 0.5}  # (1.5 − 2) / (1 − 2)
    assert rows[1]["utility_change"]["retain_loss"] == pytest.approx(0.2)
    assert rows[2]["recovery"] == {"forget_loss": 1.0} and rows[2]["retrained_recovery"] == {"forget_loss": 0.0}


# ------------------------------------------------------------------------------------------------------ relearning


def test_relearn_split_is_seeded_and_disjoint():
    subset, rest = relearn_split(20, 5, seed=3)
    assert len(subset) == 5 and sorted(subset + rest) == list(range(20))
    assert relearn_split(20, 5, seed=3) == (subset, rest) and relearn_split(20, 5, seed=4)[0] != subset
    with pytest.raises(ValueError):
        relearn_split(5, 5)


def _collate(rows):
    return pad_examples(rows, PAD)


def test_relearning_with_lr_zero_leaves_the_model_identical():
    model = tiny_gpt2()

    def evaluate(m):
        return {"forget_loss": token_loss(m, _rows(), PAD)}

    args = RelearnArguments(steps=[0, 2, 3], learning_rate=0.0, batch_size=2)
    attacked, record = relearn(model, lm_dataset(ROWS), evaluate, args, _collate)
    assert _same_weights(attacked, model)
    checkpoints = record.details["checkpoints"]
    assert [c["step"] for c in checkpoints] == [0, 2, 3]
    assert len({c["forget_loss"] for c in checkpoints}) == 1  # nothing moved
    assert record.settings["trainable"] == "full" and record.settings["rows"] == len(ROWS)


def test_relearning_trains_a_copy_and_lowers_the_loss():
    model = tiny_gpt2()
    before = copy.deepcopy(model)
    args = RelearnArguments(steps=[0, 5], learning_rate=1e-2, batch_size=2, warmup_ratio=0.0)
    attacked, record = relearn(model, lm_dataset(ROWS), lambda m: {"loss": token_loss(m, _rows(), PAD)}, args, _collate)
    assert _same_weights(model, before)  # the attacked model is a copy
    assert not _same_weights(attacked, model)
    first, last = record.details["checkpoints"]
    assert last["loss"] < first["loss"]


def test_relearning_through_lora_changes_only_through_the_adapter():
    model = tiny_gpt2()
    lora = {"r": 2, "target_modules": ["c_attn"], "fan_in_fan_out": True, "lora_alpha": 4}
    args = RelearnArguments(steps=[0, 3], learning_rate=5e-2, batch_size=2, lora=lora)
    attacked, record = relearn(model, lm_dataset(ROWS), lambda m: {}, args, _collate)
    assert record.settings["trainable"] == "lora"
    changed = {
        name for name, value in attacked.state_dict().items() if not torch.equal(value, model.state_dict()[name])
    }
    assert changed and all("c_attn" in name for name in changed)


# ---------------------------------------------------------------------------------------------------- quantization


def test_rtn_codes_by_hand():
    weight = torch.tensor([[0.4, -1.0, 0.25, 0.0, 0.1], [2.0, 0.9, -0.6, 0.2, -0.05]])
    codes, scales = rtn_codes(weight, bits=4, group_size=2)  # q = 7; groups of 2 along each row, the last of 1
    assert scales.flatten().tolist() == pytest.approx([1 / 7, 0.25 / 7, 0.1 / 7, 2 / 7, 0.6 / 7, 0.05 / 7])
    # 0.4·7 = 2.8 -> 3; 0.9·7/2 = 3.15 -> 3; 0.2·7/0.6 = 2.33 -> 2; a group's absmax -> ±7; zero -> 0
    assert codes.tolist() == [[3, -7, 7, 0, 7], [7, 3, -7, 2, -7]]


def test_quantizing_twice_is_idempotent():
    weight = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    once = rtn_fake_quant(weight, 4, group_size=4)
    assert torch.allclose(rtn_fake_quant(once, 4, group_size=4), once, rtol=1e-6, atol=0)
    model = tiny_gpt2()
    first, record = quantize(model, 4, backend="rtn", group_size=8)
    with pytest.warns(UserWarning, match="did nothing"):  # a quantized model is already on the grid
        second, again = quantize(first, 4, backend="rtn", group_size=8)
    assert again.details["logits_max_abs_diff"] == 0
    assert record.details["quantized_layers"] == record.details["candidate_layers"] == 8  # Conv1D layers too
    assert record.details["effective"]
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.allclose(a, b, rtol=1e-6, atol=0)


def test_updates_under_half_a_step_vanish_once_quantized():
    original, _ = quantize(tiny_gpt2(), 4, backend="rtn", group_size=8)  # weights on the grid
    unlearned = copy.deepcopy(original)
    moved = 0
    with torch.no_grad():
        module = unlearned.transformer.h[0].mlp.c_fc  # Conv1D: weight (in, out), grouped along `in`
        codes, _ = rtn_codes(module.weight.t(), 4, group_size=8)
        inner = (codes.abs() < 7).t()  # not a group's absmax: the group's scale stays
        module.weight.add_(1e-6 * inner)  # far under half a step (≈ absmax / 14)
        moved = int(inner.sum())
    change = quantized_code_change(original, unlearned, bits=4, group_size=8)
    assert change["changed"] == pytest.approx(moved / change["weights"])
    assert change["changed_quantized"] == 0
    with torch.no_grad():
        module.weight.add_(0.5 * module.weight.abs().max() * inner)  # now far over a step: the codes move
    assert quantized_code_change(original, unlearned, bits=4, group_size=8)["changed_quantized"] > 0


def test_the_original_is_quantized_once_per_setting_across_attacked_models(monkeypatch):
    """A run attacks several models against one original: with a shared `quantized_original`, the original is
    quantized once per setting, and every result equals the one computed without it."""
    from hf_unlearn.attacks import quantization, run_attacks

    original, rows = tiny_gpt2(), _rows()
    unlearned = [copy.deepcopy(original) for _ in range(2)]
    with torch.no_grad():
        for k, model in enumerate(unlearned):
            model.transformer.h[0].mlp.c_fc.weight.add_(0.05 * (k + 1))
    args = AttackArguments(attacks=["quant8", "quant4"], quant_backend="rtn", group_size=8)
    evaluate = lambda model: {"forget_loss": token_loss(model, rows, PAD)}
    plain = [run_attacks(model, args, evaluate, original=original) for model in unlearned]
    calls = []
    real = quantization.quantize
    monkeypatch.setattr(quantization, "quantize", lambda model, *a, **k: calls.append(model) or real(model, *a, **k))
    memo: dict = {}
    shared = [run_attacks(model, args, evaluate, original=original, quantized_original=memo) for model in unlearned]
    assert sum(model is original for model in calls) == 2 and len(memo) == 2  # 8 and 4 bits, once each
    for a, b in zip(plain, shared):
        for name in ("quant8", "quant4"):
            assert a[name]["metrics"] == b[name]["metrics"]
            assert a[name]["record"]["details"]["value_change"] == b[name]["record"]["details"]["value_change"]
            assert b[name]["record"]["details"]["value_change"]["changed_quantized"] > 0


@pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed (pip install 'hf-unlearn[attacks]')")
@pytest.mark.parametrize("bits", [8, 4])
def test_bitsandbytes_quantizes_gpt2_and_is_idempotent(bits):
    model = tiny_gpt2(n_embd=64)  # bitsandbytes' CPU 4-bit kernel needs widths divisible by its block
    weights = {}
    _, record = quantize(model, bits, weights_out=weights)
    assert record.details["quantized_layers"] == record.details["candidate_layers"] == 8
    assert record.details["logits_changed"] and record.details["effective"]
    requantized = copy.deepcopy(model)
    for name, module in requantized.named_modules():
        if name in weights:
            module.weight.data = weights[name].t().contiguous()  # Conv1D stores (in, out)
    again = {}
    quantize(requantized, bits, weights_out=again)
    assert all(torch.equal(weights[name], again[name]) for name in weights)


@pytest.mark.skipif(not HAS_TORCHAO, reason="torchao is not installed (pip install 'hf-unlearn[attacks]')")
def test_torchao_on_gpt2_is_reported_as_doing_nothing():
    with pytest.warns(UserWarning, match="did nothing"):
        _, record = quantize(tiny_gpt2(n_embd=64), 4, backend="torchao")
    assert record.details["quantized_layers"] == 0 and not record.details["effective"]


def test_gptq_refuses_to_run_without_calibration_text():
    with pytest.raises(ValueError, match="calibration"):
        quantize(tiny_gpt2(n_embd=64), 4, backend="gptq")


@pytest.mark.skipif(not HAS_GPTQ, reason="optimum and gptqmodel are not installed (pip install 'hf-unlearn[gptq]')")
@pytest.mark.parametrize("bits", [8, 4])
def test_gptq_quantizes_every_layer_close_to_its_weights(bits):
    model = tiny_gpt2(n_embd=64)
    generator = torch.Generator().manual_seed(0)
    calibration = torch.randint(0, model.config.vocab_size, (8, 12), generator=generator).tolist()
    weights = {}
    _, record = quantize(model, bits, backend="gptq", group_size=32, calibration=calibration, weights_out=weights)
    assert record.details["quantized_layers"] == record.details["candidate_layers"] == 8
    assert record.details["effective"] and record.settings["calibration_rows"] == 8
    plain = dict(dequantized_weights(model))
    assert set(weights) == set(plain)
    for name, weight in plain.items():  # each weight within a grid step of the original, never exactly all equal
        error = (weights[name] - weight).abs().max() / weight.abs().max()
        assert 0 < error <= (0.6 if bits == 4 else 0.05), name


# ------------------------------------------------------------------------------------------------------- probes


def test_logit_lens_matches_a_hand_computed_projection():
    model = tiny_gpt2(n_layer=2).eval()
    rows = _rows(prompt_length=2)
    layers = logit_lens(model, rows, PAD, batch_size=3)
    assert [entry["layer"] for entry in layers] == [0, 1, 2]
    batch = pad_examples(rows, PAD)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    targets = batch["labels"][:, 1:]
    scored = targets.ne(-100)
    with torch.no_grad():
        body = model.transformer
        hidden = body.wte(ids) + body.wpe(torch.arange(ids.shape[1]))
        states = [hidden]
        causal = torch.tril(torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool))
        keep = causal[None, None] & mask[:, None, None, :].bool()
        bias = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
        for block in body.h:
            out = block(hidden, attention_mask=bias)  # a bare tensor in transformers 5, a tuple before
            hidden = out[0] if isinstance(out, tuple) else out
            states.append(hidden)
        for layer, state in enumerate(states):
            logits = model.lm_head(body.ln_f(state))[:, :-1]
            nll = F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")[scored]
            gold = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1))
            rank = (logits > gold).sum(-1)[scored].float()
            assert layers[layer]["loss"] == pytest.approx(nll.mean().item(), rel=1e-5)
            assert layers[layer]["rank"] == pytest.approx(rank.mean().item())
            assert layers[layer]["top1"] == pytest.approx(rank.eq(0).float().mean().item())
    assert layers[-1]["loss"] == pytest.approx(token_loss(model, rows, PAD), rel=1e-5)


def test_prefix_probe_scores_only_the_tokens_after_the_prefix():
    model = tiny_gpt2().eval()
    rows = _rows(prompt_length=1)
    loss = prefix_probe(model, rows, prefix_tokens=2, pad_token_id=PAD)
    total, count = 0.0, 0
    with torch.no_grad():
        for row in ROWS:
            logits = model(torch.tensor([row])).logits[0, :-1]
            nll = F.cross_entropy(logits, torch.tensor(row[1:]), reduction="none")
            # labels from position 1 on; the first two scored targets (positions 1, 2) become context
            total += float(nll[2:].sum())
            count += len(row) - 3
    assert loss == pytest.approx(total / count, rel=1e-5)


def test_few_shot_probe_scores_the_row_after_the_context():
    model = tiny_gpt2().eval()
    context = [9, 8, 7]
    loss = few_shot_probe(model, _rows(), context, PAD)
    total, count = 0.0, 0
    with torch.no_grad():
        for row in ROWS:
            logits = model(torch.tensor([context + row])).logits[0, len(context) : -1]
            total += float(F.cross_entropy(logits, torch.tensor(row[1:]), reduction="sum"))
            count += len(row) - 1
    assert loss == pytest.approx(total / count, rel=1e-5)
    with pytest.raises(ValueError, match="positions"):
        few_shot_probe(tiny_gpt2(n_positions=8), _rows(), context, PAD)


# ------------------------------------------------------------------------------------------- settings and imports


def test_attack_arguments_refuse_unknown_names():
    with pytest.raises(ValueError, match="jailbreak"):
        AttackArguments(attacks=["jailbreak"])
    with pytest.raises(ValueError, match="quant_backend"):
        AttackArguments(quant_backend="hqq")
    with pytest.raises(ValueError, match="calibration_rows"):
        AttackArguments(quant_backend="gptq", calibration_rows=0)
    assert AttackArguments(relearn={"learning_rate": 1e-4}).relearn.learning_rate == 1e-4


def test_attack_settings_hold_calibration_rows_only_where_gptq_calibrates():
    # The settings key the cached attack stages: a setting no attack reads must not invalidate them.
    assert "calibration_rows" not in AttackArguments(calibration_rows=7).settings()
    assert "calibration_rows" not in AttackArguments(quant_backend="gptq", attacks=["relearn"]).settings()
    assert AttackArguments(quant_backend="gptq", calibration_rows=7).settings()["calibration_rows"] == 7
    assert AttackArguments(quant_backend="gptq").settings()["quant_backend"] == "gptq"


def test_attacks_package_imports_without_torch():
    code = "import sys, hf_unlearn.attacks as a; a.AttackArguments(); assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unsupported_attacks_names_what_a_task_cannot_run():
    from hf_unlearn.attacks.suite import unsupported_attacks

    runs = ("relearn", "quant8")
    assert unsupported_attacks(None, "Toy", runs) is None
    assert unsupported_attacks(AttackArguments(attacks=["relearn"]), "Toy", runs) is None
    message = unsupported_attacks(AttackArguments(attacks=["relearn", "logit_lens"]), "Toy", runs)
    assert message == "attacks.attacks: logit_lens cannot run on the Toy task (it runs relearn, quant8)."
    args = AttackArguments(attacks=["relearn"], relearn_sets=["forget_subset", "unrelated"])
    message = unsupported_attacks(args, "Toy", runs, ("forget_subset",), "no such text")
    assert (
        message
        == "attacks.relearn_sets: unrelated cannot run on the Toy task (it relearns forget_subset; no such text)."
    )
    # Relearning sets only matter when relearning runs.
    assert unsupported_attacks(AttackArguments(attacks=["quant8"], relearn_sets=["unrelated"]), "Toy", runs, ()) is None
