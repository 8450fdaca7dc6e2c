"""The field's baselines (IdkNLL, IdkDPO, RMU, UNDIAL, WGA, SatImp, CE-U, ME+GD, PDU): each loss against a hand
computation on a few tokens of a 5-word vocabulary, the configs' validation, one training step moving the loss the
right way, PDU's dual variable and the idk rows. Split invariance: tests/test_batch_split.py."""

import copy
import json
import math

import pytest
import torch
from datasets import Dataset

from hf_unlearn.data.idk import IDK_ANSWERS_FILE, IdkDataset, idk_row, load_idk_answers
from hf_unlearn.trainers import (
    METHODS,
    CEUConfig,
    IdkDPOConfig,
    IdkNLLConfig,
    MEGDConfig,
    PDUConfig,
    RMUConfig,
    SatImpConfig,
    UNDIALConfig,
    WGAConfig,
    ceu_loss,
    idkdpo_loss,
    idknll_loss,
    me_loss,
    pdu_constraint,
    pdu_dual_update,
    pdu_loss,
    rmu_loss,
    satimp_loss,
    undial_loss,
    wga_loss,
)
from hf_unlearn.utils import sequence_nll, token_logprobs

from .conftest import tiny_gpt2

Z = [1.0, 2.0, 0.0, -1.0, 0.5]  # logits of one position over a 5-word vocabulary
Z2 = [0.0, 0.0, 3.0, 1.0, -2.0]


def softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def logsigmoid(x):
    return -math.log(1 + math.exp(-x))


# ----- losses by hand ------------------------------------------------------------------------------------------


def test_wga_and_satimp_by_hand():
    p = [0.5, 0.2, 0.9]
    logps = torch.tensor([[math.log(v) for v in p]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    expected = (0.5**2 * math.log(0.5) + 0.2**2 * math.log(0.2)) / 2  # β = 2
    assert wga_loss(logps, mask, 2.0).item() == pytest.approx(expected)
    assert wga_loss(logps, mask, 2.0, num_items_in_batch=4).item() == pytest.approx(expected * 2 / 4)
    w = [v**5 * (1 - v) for v in p[:2]]  # β₁ = 5, β₂ = 1
    loss = satimp_loss(logps, mask, 5.0, 1.0)
    assert loss.item() == pytest.approx((w[0] * math.log(0.5) + w[1] * math.log(0.2)) / 2)
    loss.backward()  # the weights are detached: ∂L/∂log p_t = w_t / N
    assert logps.grad[0].tolist() == pytest.approx([w[0] / 2, w[1] / 2, 0.0])
    # Influence weights: Σ_i ŵ_i v̄_i / Σ ŵ with v̄_i each sequence's own token mean.
    two = torch.tensor([[math.log(0.5), math.log(0.2)], [math.log(0.9), 0.0]])
    weighted = wga_loss(two, torch.tensor([[True, True], [True, False]]), 0.0, weights=torch.tensor([1.0, 3.0]))
    assert weighted.item() == pytest.approx((1 * (math.log(0.5) + math.log(0.2)) / 2 + 3 * math.log(0.9)) / 4)


def test_idknll_and_idkdpo_by_hand():
    assert idknll_loss(torch.tensor([3.0, 5.0]), torch.tensor([2, 3])).item() == pytest.approx(8 / 5)
    assert idknll_loss(torch.tensor([3.0, 5.0]), torch.tensor([2, 3]), num_items_in_batch=10).item() == pytest.approx(
        0.8
    )
    weighted = idknll_loss(torch.tensor([3.0, 6.0]), torch.tensor([2, 3]), weights=torch.tensor([1.0, 1.0]))
    assert weighted.item() == pytest.approx((1.5 + 2.0) / 2)
    beta = 0.5
    # r(idk) − r(f) = (ℓ_ref,idk − ℓ_idk) − (ℓ_ref,f − ℓ_f)
    margins = [(4.0 - 3.0) - (2.0 - 2.5), (1.0 - 2.0) - (3.0 - 3.0)]
    expected = -(2 / beta) * (logsigmoid(beta * margins[0]) + logsigmoid(beta * margins[1])) / 2
    loss = idkdpo_loss(
        torch.tensor([3.0, 2.0]), torch.tensor([4.0, 1.0]), torch.tensor([2.5, 3.0]), torch.tensor([2.0, 3.0]), beta
    )
    assert loss.item() == pytest.approx(expected)


def test_ceu_by_hand():
    logits = torch.tensor([[Z, Z2]], requires_grad=True)  # (1, 2, 5)
    targets = torch.tensor([[1, 2]])
    q = softmax([v for i, v in enumerate(Z) if i != 1])
    q = q[:1] + [0.0] + q[1:]  # the labelled token removed
    logp = [math.log(v) for v in softmax(Z)]
    first = -sum(a * b for a, b in zip(q, logp))
    q2 = softmax([v for i, v in enumerate(Z2) if i != 2])
    q2 = q2[:2] + [0.0] + q2[2:]
    second = -sum(a * b for a, b in zip(q2, [math.log(v) for v in softmax(Z2)]))
    both = torch.tensor([[True, True]])
    assert ceu_loss(logits, targets, both).item() == pytest.approx((first + second) / 2, rel=1e-6)
    only_second = torch.tensor([[False, True]])
    assert ceu_loss(logits, targets, only_second, num_items_in_batch=2).item() == pytest.approx(second / 2, rel=1e-6)
    ceu_loss(logits, targets, both).backward()  # the target's logit is pushed down
    assert logits.grad[0, 0, 1] > 0 and logits.grad[0, 1, 2] > 0


def test_undial_by_hand():
    beta = 3.0
    ref = [v - (beta if i == 1 else 0.0) for i, v in enumerate(Z2)]  # z_ref − β·e_y with y = 1
    q = softmax(ref)
    expected = -sum(a * math.log(b) for a, b in zip(q, softmax(Z)))
    loss = undial_loss(torch.tensor([[Z]]), torch.tensor([[Z2]]), torch.tensor([[1]]), torch.tensor([[True]]), beta)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_me_by_hand():
    p = softmax(Z)
    kl = sum(0.2 * math.log(0.2 / v) for v in p)  # KL(U ‖ p), V = 5
    kl2 = sum(0.2 * math.log(0.2 / v) for v in softmax(Z2))
    loss = me_loss(torch.tensor([[Z, Z2]]), torch.tensor([[True, True]]))
    assert loss.item() == pytest.approx((kl + kl2) / 2, rel=1e-6)
    assert me_loss(torch.tensor([[[0.3] * 5]]), torch.tensor([[True]])).item() == pytest.approx(0.0, abs=1e-7)


def test_pdu_by_hand():
    spread = (2.0 - sum(Z) / 5) ** 2
    spread2 = (3.0 - sum(Z2) / 5) ** 2
    assert pdu_loss(torch.tensor([[Z, Z2]]), torch.tensor([[True, True]])).item() == pytest.approx(
        (spread + spread2) / 2
    )
    assert pdu_loss(torch.tensor([[Z, Z2]]), torch.tensor([[False, True]]), num_items_in_batch=4).item() == (
        pytest.approx(spread2 / 4)
    )
    # λ·(CE(R) − ε) as a share over the step's retain tokens: 2·((3 + 5) − 0.5·(2 + 3)) / 10
    share = pdu_constraint(torch.tensor([3.0, 5.0]), torch.tensor([2, 3]), 2.0, 0.5, num_items_in_batch=10)
    assert share.item() == pytest.approx(2 * (8 - 2.5) / 10)
    assert pdu_dual_update(1.0, 0.8, 0.5, 2.0) == pytest.approx(1.6)
    assert pdu_dual_update(0.1, 0.2, 0.5, 2.0) == 0.0  # projected onto λ ≥ 0


def test_rmu_by_hand():
    hidden = torch.tensor([[[1.0, 2.0], [0.0, -1.0], [5.0, 5.0]]])  # (1, 3, d = 2)
    target = torch.tensor([0.5, 0.5])
    mask = torch.tensor([[True, True, False]])
    expected = (((0.5**2 + 1.5**2) / 2) + ((0.5**2 + 1.5**2) / 2)) / 2
    assert rmu_loss(hidden, target, mask).item() == pytest.approx(expected)
    ref = torch.zeros(1, 3, 2)
    assert rmu_loss(hidden, ref, mask, num_items_in_batch=4).item() == pytest.approx(((1 + 4) / 2 + 1 / 2) / 4)


# ----- configs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config_class, settings, message",
    [
        (WGAConfig, {"beta": -1.0}, "beta"),
        (SatImpConfig, {"beta2": -0.5}, "beta2"),
        (SatImpConfig, {"forget_loss_weight": 0.0}, "forget_loss_weight"),
        (CEUConfig, {"ignore_first_answer_tokens": -1}, "ignore_first_answer_tokens"),
        (UNDIALConfig, {"beta": -3.0}, "beta"),
        (MEGDConfig, {"forget_loss_weight": -0.1}, "forget_loss_weight"),
        (IdkNLLConfig, {"idk_token_ids": []}, "idk_token_ids"),
        (IdkNLLConfig, {"idk_answers": []}, "idk_answers"),
        (IdkDPOConfig, {"reference": "precomputed"}, "reference='precomputed'"),
        (IdkDPOConfig, {"beta": 0.0}, "beta"),
        (RMUConfig, {"retain_loss": "nll"}, "retain_loss='nll'"),
        (RMUConfig, {"steering_coefficient": 0.0}, "steering_coefficient"),
        (RMUConfig, {"layer": -1}, "layer"),
        (PDUConfig, {}, "retain_loss_bound"),
        (PDUConfig, {"retain_loss_bound": 0.3, "retain_loss": "kl"}, "retain_loss='kl'"),
        (PDUConfig, {"retain_loss_bound": 0.3, "dual_step_size": -1.0}, "dual_step_size"),
    ],
)
def test_configs_name_the_bad_value(config_class, settings, message):
    with pytest.raises(ValueError, match=message):
        config_class(output_dir="x", **settings)


def test_config_defaults_and_presets():
    assert (
        SatImpConfig(output_dir="x").forget_loss_weight == 0.1 and SatImpConfig(output_dir="x").retain_loss_weight == 1
    )
    assert UNDIALConfig(output_dir="x").retain_loss == "none" and IdkDPOConfig(output_dir="x").reference == "live"
    rmu = RMUConfig(output_dir="x")
    assert (rmu.retain_loss, rmu.retain_loss_weight, rmu.steering_coefficient, rmu.layer) == ("activations", 1, 2, 7)
    assert RMUConfig(output_dir="x", retain_loss="none").retain_loss_weight is None
    wmdp = RMUConfig.preset("wmdp_zephyr", output_dir="x", max_steps=3)
    assert (wmdp.steering_coefficient, wmdp.retain_loss_weight, wmdp.trainable, wmdp.max_steps) == (
        6.5, 1200.0, "patterns", 3,
    )  # fmt: skip
    with pytest.raises(ValueError, match="Unknown RMU preset 'wmdp'"):
        RMUConfig.preset("wmdp", output_dir="x")
    assert PDUConfig(output_dir="x", retain_loss_bound=0.3).retain_loss_weight == 1.0  # λ₀


# ----- one training step moves the loss the right way ------------------------------------------------------------


def _step(name, forget, retain, lr=0.5, **settings):
    """The initial and the trained model after one plain-SGD step of method `name`, and the trainer."""
    config_class, trainer_class = METHODS[name]
    start = tiny_gpt2(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = copy.deepcopy(start)
    args = config_class(
        output_dir="unused", max_steps=1, optim="sgd", learning_rate=lr, max_grad_norm=0.0, weight_decay=0.0,
        per_device_train_batch_size=8, report_to="none", save_strategy="no", disable_tqdm=True, logging_steps=1,
        **settings,
    )  # fmt: skip
    trainer = trainer_class(model, args, forget_dataset=forget, retain_dataset=retain)
    trainer.train()
    return start, model, trainer


def _forget_nll(model, dataset, rows=None):
    """Token-mean answer NLL of `dataset` (or of the given padded `rows`)."""
    from hf_unlearn.data.pairing import pad_examples

    batch = rows if rows is not None else pad_examples([dataset[i] for i in range(len(dataset))], 10)
    with torch.no_grad():
        nll, count = sequence_nll(model(input_ids=batch["input_ids"]).logits, batch["labels"])
    return float(nll.sum() / count.sum())


@pytest.mark.parametrize(
    "name, settings",
    [
        ("WGA", {"retain_loss": "none"}),
        ("SatImp", {"retain_loss": "none", "beta1": 1.0, "forget_loss_weight": 1.0}),
        ("CE-U", {}),
        ("UNDIAL", {"beta": 3.0}),
    ],
)
def test_ascent_methods_raise_the_forget_nll(name, settings, forget_dataset):
    start, model, trainer = _step(name, forget_dataset, None, **settings)
    assert _forget_nll(model, forget_dataset) > _forget_nll(start, forget_dataset) + 1e-3
    assert "forget_nll" in trainer.state.log_history[0]


def test_me_flattens_the_forget_distributions(forget_dataset, retain_dataset):
    start, model, _ = _step("ME+GD", forget_dataset, retain_dataset, retain_loss_weight=0.0)

    def kl_to_uniform(m):
        from hf_unlearn.data.pairing import pad_examples

        batch = pad_examples([forget_dataset[i] for i in range(8)], 10)
        with torch.no_grad():
            logits = m(input_ids=batch["input_ids"]).logits
        return float(me_loss(logits[:, :-1], batch["labels"][:, 1:].ne(-100)))

    assert kl_to_uniform(model) < kl_to_uniform(start) - 1e-4


def test_idknll_lowers_the_idk_nll(forget_dataset, retain_dataset):
    idk = [3, 1, 4, 1, 5]
    start, model, trainer = _step("IdkNLL", forget_dataset, retain_dataset, retain_loss="none", idk_token_ids=idk)
    rows = trainer.train_dataset.forget  # the forget rows; their idk versions:
    from hf_unlearn.data.pairing import pad_examples

    batch = pad_examples([idk_row(rows[i], idk) for i in range(len(rows))], 10)
    assert _forget_nll(model, None, batch) < _forget_nll(start, None, batch) - 1e-3
    assert "idk_nll" in trainer.state.log_history[0]


def test_idkdpo_prefers_the_idk_answer(forget_dataset, retain_dataset):
    idk = [3, 1, 4, 1, 5]
    start, model, trainer = _step("IdkDPO", forget_dataset, None, retain_loss="none", idk_token_ids=idk, beta=0.5)
    from hf_unlearn.data.pairing import pad_examples

    forget = pad_examples([forget_dataset[i] for i in range(8)], 10)
    idk_rows = pad_examples([idk_row(forget_dataset[i], idk) for i in range(8)], 10)

    def margin(m):  # mean over pairs of (log π(idk) − log π(forget)), up to the reference's constant
        with torch.no_grad():
            return float((sequence_nll(m(input_ids=forget["input_ids"]).logits, forget["labels"])[0]
                          - sequence_nll(m(input_ids=idk_rows["input_ids"]).logits, idk_rows["labels"])[0]).mean())  # fmt: skip

    assert margin(model) > margin(start) + 1e-3
    assert trainer.ref_model is not None  # the live reference


def test_pdu_flattens_the_forget_logits(forget_dataset, retain_dataset):
    start, model, _ = _step("PDU", forget_dataset, retain_dataset, retain_loss_bound=10.0, retain_loss_weight=0.0)
    from hf_unlearn.data.pairing import pad_examples

    batch = pad_examples([forget_dataset[i] for i in range(8)], 10)

    def spread(m):
        with torch.no_grad():
            return float(pdu_loss(m(input_ids=batch["input_ids"]).logits[:, :-1], batch["labels"][:, 1:].ne(-100)))

    assert spread(model) < spread(start) - 1e-4


def test_rmu_steers_forget_activations_and_trains_only_the_chosen_weights(forget_dataset, retain_dataset):
    settings = {"layer": 1, "trainable": "patterns", "trainable_patterns": [r"h\.(0|1)\.mlp\.c_proj\.weight"]}
    start, model, trainer = _step("RMU", forget_dataset, retain_dataset, lr=2.0, **settings)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, dict(start.named_parameters())[n])}
    assert changed == {"transformer.h.0.mlp.c_proj.weight", "transformer.h.1.mlp.c_proj.weight"}
    from hf_unlearn.data.pairing import pad_examples
    from hf_unlearn.trainers.rmu_trainer import decoder_layer

    batch = pad_examples([forget_dataset[i] for i in range(8)], 10)

    def distance(m):
        store = {}
        handle = decoder_layer(m, 1).register_forward_hook(
            lambda mod, a, out: store.update(h=out[0] if isinstance(out, tuple) else out)
        )
        with torch.no_grad():
            m(input_ids=batch["input_ids"])
        handle.remove()
        target = trainer.control_vector
        assert target.norm().item() == pytest.approx(2.0) and bool((target > 0).all())  # c·u, u ≥ 0, ‖u‖ = 1
        return float(rmu_loss(store["h"][:, 1:], target, batch["labels"][:, 1:].ne(-100)))

    assert distance(model) < distance(start) - 1e-4
    assert "rmu/retain_distance" in trainer.state.log_history[0]


def test_rmu_retain_term_does_not_depend_on_the_split(forget_dataset, retain_dataset):
    """At the initial model h = h_ref and the retain gradient is zero, so the shared split test cannot see the
    retain term; against another reference model it must still give the same step for 8 × 1 and 2 × 4."""
    reference = tiny_gpt2(seed=5, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    updates = []
    for per_device, accumulation in ((8, 1), (2, 4)):
        start = tiny_gpt2(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = copy.deepcopy(start)
        args = RMUConfig(
            output_dir="unused", max_steps=1, optim="sgd", learning_rate=0.5, max_grad_norm=0.0, weight_decay=0.0,
            per_device_train_batch_size=per_device, gradient_accumulation_steps=accumulation, layer=1,
            forget_loss_weight=1e-6, report_to="none", save_strategy="no", disable_tqdm=True,
        )  # fmt: skip
        trainer = METHODS["RMU"][1](model, args, forget_dataset=forget_dataset, retain_dataset=retain_dataset,
                                    ref_model=copy.deepcopy(reference))  # fmt: skip
        trainer.train()
        updates.append(torch.cat([(a - b).flatten() for a, b in zip(model.parameters(), start.parameters())]))
        # What layer 1's output does not depend on stops training (DDP would otherwise wait for its gradients).
        assert "transformer.ln_f.weight" not in trainer.trainable_names
        assert "transformer.h.1.mlp.c_proj.weight" in trainer.trainable_names
    assert updates[0].norm() > 1e-3
    assert (updates[0] - updates[1]).norm() / updates[0].norm() < 1e-4


# ----- PDU's dual variable -------------------------------------------------------------------------------------


def _pdu(tmp_path, forget, retain, per_device=8, accumulation=1, **settings):
    model = tiny_gpt2(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    args = PDUConfig(
        output_dir=str(tmp_path), optim="sgd", learning_rate=0.1, max_grad_norm=0.0, weight_decay=0.0,
        per_device_train_batch_size=per_device, gradient_accumulation_steps=accumulation, report_to="none",
        disable_tqdm=True, retain_loss_bound=1.5, retain_loss_weight=2.0, dual_step_size=3.0, **settings,
    )  # fmt: skip
    return model, METHODS["PDU"][1](model, args, forget_dataset=forget, retain_dataset=retain)


def test_pdu_updates_the_dual_once_per_step_and_saves_it(tmp_path, forget_dataset, retain_dataset):
    initial = tiny_gpt2(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    _, trainer = _pdu(tmp_path / "a", forget_dataset, retain_dataset, 2, 4, max_steps=1, dual_warmup_epochs=0,
                          save_strategy="steps", save_steps=1)  # fmt: skip
    dataset = trainer.train_dataset
    paired = [dataset.retain[dataset.retain_index(i)] for i in range(len(dataset))]  # epoch 0's retain rows
    from hf_unlearn.data.pairing import pad_examples

    retain_nll = _forget_nll(initial, None, pad_examples(paired, 10))  # CE(R) of the step, at θ₀
    trainer.train()
    expected = max(0.0, 2.0 + 3.0 * (retain_nll - 1.5))
    assert trainer.dual == pytest.approx(expected, rel=1e-5)
    saved = json.loads((tmp_path / "a" / "checkpoint-1" / "pdu_dual.json").read_text())
    assert saved["dual"] == pytest.approx(expected, rel=1e-5)
    _, resumed = _pdu(tmp_path / "a", forget_dataset, retain_dataset, max_steps=2, dual_warmup_epochs=0)
    resumed.prepare_training(str(tmp_path / "a" / "checkpoint-1"))
    assert resumed.dual == pytest.approx(expected, rel=1e-5)
    _, warm = _pdu(tmp_path / "b", forget_dataset, retain_dataset, max_steps=1, save_strategy="no")
    warm.train()
    assert warm.dual == 2.0  # still in the warm-up (5 epochs by default)


def test_pdu_dual_stays_during_the_warmup_epochs(tmp_path, forget_dataset, retain_dataset):
    _, trainer = _pdu(tmp_path, forget_dataset, retain_dataset, 4, 1, num_train_epochs=2, dual_warmup_epochs=1,
                      save_strategy="no", logging_steps=1)  # fmt: skip
    trainer.train()
    duals = [entry["pdu/dual"] for entry in trainer.state.log_history if "pdu/dual" in entry]
    assert len(duals) == 4 and duals[:2] == [2.0, 2.0]  # 2 steps per epoch; λ moves from the first step of epoch 1
    assert duals[2] != 2.0 and duals[3] != duals[2]


def test_pdu_two_steps_do_not_depend_on_the_split(tmp_path, forget_dataset, retain_dataset):
    """λ moves after step 1 and weights step 2: the same for 8 × 1 and 2 × 4."""
    results = []
    for per_device, accumulation in ((8, 1), (2, 4)):
        model, trainer = _pdu(tmp_path / str(per_device), forget_dataset, retain_dataset, per_device, accumulation,
                              max_steps=2, dual_warmup_epochs=0, save_strategy="no")  # fmt: skip
        trainer.train()
        results.append((trainer.dual, torch.cat([p.detach().flatten() for p in model.parameters()])))
    assert results[0][0] != 2.0 and results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    assert (results[0][1] - results[1][1]).norm() / results[0][1].norm() < 1e-5


# ----- idk rows ------------------------------------------------------------------------------------------------


def test_shipped_refusals_and_idk_rows():
    answers = load_idk_answers()
    assert len(answers) == 100 and len(set(answers)) == 100
    assert load_idk_answers(str(IDK_ANSWERS_FILE)) == answers and load_idk_answers([" No idea. ", ""]) == ["No idea."]
    with pytest.raises(ValueError, match="is not a file"):
        load_idk_answers("/no/such/refusals.txt")
    row = idk_row({"input_ids": [7, 8, 9, 4, 5], "labels": [-100, -100, 9, 4, 5]}, [1, 2])
    assert row == {"input_ids": [7, 8, 1, 2], "labels": [-100, -100, 1, 2], "attention_mask": [1, 1, 1, 1]}
    # Labels from position 0 (the Markov rows): the first token is the prompt (it is never a target).
    assert idk_row({"input_ids": [7, 8, 9], "labels": [7, 8, 9]}, [1])["input_ids"] == [7, 1]


def test_idk_rows_from_text_use_the_chat_template_and_redraw_each_epoch(tmp_path):
    from .tofu_helpers import make_model, make_tokenizer

    tokenizer = make_tokenizer()
    forget = Dataset.from_list([{"question": f"Who wrote book {i}?", "answer": f"Author {i}."} for i in range(6)])
    args = IdkNLLConfig(output_dir=str(tmp_path), max_steps=1, retain_loss="none", report_to="none",
                        save_strategy="no", disable_tqdm=True, idk_answers=["I don't know.", "No idea at all."])  # fmt: skip
    trainer = METHODS["IdkNLL"][1](make_model(tokenizer), args, forget_dataset=forget, processing_class=tokenizer)
    trainer.train()
    dataset: IdkDataset = trainer.train_dataset
    texts = {tokenizer.decode([t for t in dataset[i]["forget"]["labels"] if t != -100]) for i in range(6)}
    assert texts <= {"I don't know.<|im_end|>", "No idea at all.<|im_end|>"} and len(texts) == 2
    prompt = dataset[0]["forget"]["input_ids"][: dataset[0]["forget"]["labels"].index(next(
        t for t in dataset[0]["forget"]["labels"] if t != -100))]  # fmt: skip
    assert tokenizer.decode(prompt).endswith("Who wrote book 0?<|im_end|>\n<|im_start|>assistant\n")
    draws = [[dataset.answer_index(i) for i in range(6)] for dataset.epoch in (0, 1, 0)]
    assert draws[0] == draws[2] and draws[0] != draws[1]


def test_idk_methods_without_a_tokenizer_need_token_ids(forget_dataset, tmp_path):
    args = IdkNLLConfig(output_dir=str(tmp_path), max_steps=1, retain_loss="none", report_to="none")
    trainer = METHODS["IdkNLL"][1](tiny_gpt2(), args, forget_dataset=forget_dataset)
    with pytest.raises(ValueError, match="idk_token_ids"):
        trainer.train()
    args = IdkNLLConfig(output_dir=str(tmp_path), max_steps=1, retain_loss="none", idk_token_ids=[3, 99])
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        METHODS["IdkNLL"][1](tiny_gpt2(), args, forget_dataset=forget_dataset).train()


def test_token_logprobs_feed_the_token_losses():
    """The trainers' inputs: log p_t at the labelled positions after the causal shift."""
    logits = torch.tensor([[Z, Z2, Z]])
    logps, mask = token_logprobs(logits, torch.tensor([[-100, 1, 2]]))
    assert mask.tolist() == [[True, True]]
    assert logps[0].tolist() == pytest.approx([math.log(softmax(Z)[1]), math.log(softmax(Z2)[2])])


@pytest.mark.parametrize("name", ["UNDIAL", "RMU"])
def test_peft_reference_is_the_base_model_under_the_disabled_adapter(name, forget_dataset, retain_dataset, tmp_path):
    from peft import LoraConfig

    from hf_unlearn.data.pairing import pad_examples
    from hf_unlearn.trainers.rmu_trainer import decoder_layer
    from hf_unlearn.trainers.token_terms import answer_positions

    base = tiny_gpt2(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    original = copy.deepcopy(base)
    lora = LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)
    config_class, trainer_class = METHODS[name]
    args = config_class(output_dir=str(tmp_path), report_to="none", **({"layer": 1} if name == "RMU" else {}))
    trainer = trainer_class(base, args, forget_dataset=forget_dataset, retain_dataset=retain_dataset, peft_config=lora)
    assert trainer.ref_model is None
    trainer.model.eval()
    rows = retain_dataset if name == "RMU" else forget_dataset
    batch = pad_examples([rows[i] for i in range(8)], 10)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if name == "UNDIAL":
        value = trainer.forget_loss(trainer.model, {"forget": batch, "index": torch.arange(8)})
        with torch.no_grad():
            logits, targets, mask = answer_positions(trainer.model(**inputs).logits, batch["labels"])
            ref_logits = answer_positions(original(**inputs).logits, batch["labels"])[0]
        expected = undial_loss(logits, ref_logits, targets, mask, args.beta)
        with torch.no_grad():  # the adapter changes the model, so a reference equal to the policy would differ
            assert expected.item() != pytest.approx(undial_loss(logits, logits, targets, mask, args.beta).item())
    else:
        value = trainer.retain_loss(trainer.model, {"retain": batch})
        hidden = {}
        for label, model in (("policy", trainer.model), ("original", original)):
            handle = decoder_layer(model, 1).register_forward_hook(
                lambda mod, a, out, label=label: hidden.update({label: out[0] if isinstance(out, tuple) else out})
            )
            with torch.no_grad():
                model(**inputs)
            handle.remove()
        mask = batch["labels"][:, 1:].ne(-100)
        expected = rmu_loss(hidden["policy"][:, 1:], hidden["original"][:, 1:], mask)
        assert expected.item() > 1e-8
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_every_baseline_runs_by_name_in_the_markov_recipe(tmp_path):
    """The CLI's Markov task with the nine methods of this file on a tiny recipe: a row each (tokenized rows, so the
    idk methods get their answer as token ids; RMU's layer within the 1-layer model; PDU's bound given)."""
    import yaml

    from hf_unlearn.cli import main

    from .test_cli import TINY

    methods = {
        "IdkNLL": {"idk_token_ids": [0, 1, 2, 3]},
        "IdkDPO": {"idk_token_ids": [0, 1, 2, 3]},
        "RMU": {"layer": 0},
        "UNDIAL": {},
        "WGA": {},
        "SatImp": {},
        "CE-U": {},
        "ME+GD": {},
        "PDU": {"retain_loss_bound": 2.0, "dual_warmup_epochs": 0},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({**TINY, "methods": methods}))
    assert main(["run", str(tmp_path / "recipe.yaml"), "--output-dir", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["methods"]) == set(methods)
    for name, row in results["methods"].items():
        assert row["steps"] == 3 and [entry["step"] for entry in row["history"]] == [0, 1, 2, 3]
        if name != "RMU":  # RMU moves activations; the others raise the forget NLL within 3 steps at lr 1e-2
            assert row["forget_loss"] > results["original"]["forget_loss"], name
