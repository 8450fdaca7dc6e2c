"""IMUTrainer: the weighted loss, head-only updates (tied embeddings, PEFT), ν, checkpoints, bad input."""

import copy
import math

import pytest
import torch

from hf_unlearn import IMUConfig, IMUTrainer
from hf_unlearn.influence import influence_weights, lm_head_influence
from hf_unlearn.trainers import imu_loss

from .conftest import lm_dataset, tiny_gpt2

COMMON = {
    "per_device_train_batch_size": 4,
    "report_to": "none",
    "save_strategy": "no",
    "disable_tqdm": True,
    "learning_rate": 1e-2,
}


@pytest.fixture
def forget():
    generator = torch.Generator().manual_seed(11)
    return lm_dataset(
        [torch.randint(0, 10, (int(n),), generator=generator).tolist() for n in [6, 8] * 6], prompt_length=2
    )


def test_imu_loss_by_hand():
    nll, weights = torch.tensor([2.0, 1.0, 3.0]), torch.tensor([0.5, 1.5, 0.0])
    assert imu_loss(nll, weights).item() == pytest.approx(-(0.5 * 2 + 1.5 * 1) / 2.0)
    assert imu_loss(nll, torch.zeros(3)).item() == 0.0


def test_compute_loss_uses_the_influence_weights(forget, tmp_path):
    model = tiny_gpt2(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    trainer = IMUTrainer(model, IMUConfig(output_dir=str(tmp_path), **COMMON), forget_dataset=forget)
    trainer.weighter.update()
    expected_scores = lm_head_influence(model, forget, damping=0.1, progress_bar=False)
    torch.testing.assert_close(trainer.scores, expected_scores.float())
    torch.testing.assert_close(trainer.sample_weights, influence_weights(expected_scores, "sqrt").float())
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    model.eval()
    loss = trainer.compute_loss(model, batch).item()
    by_hand, total = 0.0, 0.0
    for i in batch["index"].tolist():
        ids, labels = torch.tensor([forget[i]["input_ids"]]), torch.tensor([forget[i]["labels"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
        targets = labels[0, 1:]
        mean_nll = -logp[targets >= 0].gather(1, targets[targets >= 0][:, None]).mean().item()
        by_hand -= trainer.sample_weights[i].item() * mean_nll
        total += trainer.sample_weights[i].item()
    assert loss == pytest.approx(by_hand / total, rel=1e-5)


def test_head_only_on_tied_embeddings_keeps_input_embeddings(forget, tmp_path):
    model = tiny_gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = IMUTrainer(model, IMUConfig(output_dir=str(tmp_path), max_steps=3, **COMMON), forget_dataset=forget)
    trainer.train()
    assert torch.equal(model.transformer.wte.weight, before["transformer.wte.weight"])  # bit-identical
    assert not torch.equal(model.lm_head.weight, before["transformer.wte.weight"])
    for name, parameter in model.named_parameters():
        if name != "lm_head.weight":
            assert torch.equal(parameter, before[name]), name
    # The untied head survives a save/load round trip.
    model.save_pretrained(tmp_path / "saved")
    reloaded = type(model).from_pretrained(tmp_path / "saved")
    assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)
    assert torch.equal(reloaded.transformer.wte.weight, before["transformer.wte.weight"])


def test_trainable_all_moves_the_body(forget, tmp_path):
    model = tiny_gpt2()
    before = model.transformer.h[0].mlp.c_fc.weight.detach().clone()
    args = IMUConfig(output_dir=str(tmp_path), max_steps=2, trainable="all", **COMMON)
    IMUTrainer(model, args, forget_dataset=forget).train()
    assert not torch.equal(model.transformer.h[0].mlp.c_fc.weight, before)


def test_peft_head_only_trains_the_saved_head_copy(forget, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = tiny_gpt2()
    wte = base.transformer.wte.weight.detach().clone()
    with pytest.raises(ValueError, match="modules_to_save"):
        IMUTrainer(
            get_peft_model(copy.deepcopy(base), LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True)),
            IMUConfig(output_dir=str(tmp_path), **COMMON),
            forget_dataset=forget,
        )
    lora = LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True, modules_to_save=["lm_head"])
    model = get_peft_model(base, lora)
    trainer = IMUTrainer(model, IMUConfig(output_dir=str(tmp_path), max_steps=2, **COMMON), forget_dataset=forget)
    trainer.train()
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trained and all("modules_to_save" in name for name in trained)
    assert torch.equal(base.transformer.wte.weight, wte)
    head = trainer.head_parameters()[0]
    assert not torch.equal(head, wte)


def test_nu_recomputes_every_epoch(forget, tmp_path):
    args = IMUConfig(output_dir=str(tmp_path), num_train_epochs=2, influence_weighting={"update_epochs": 1}, **COMMON)
    trainer = IMUTrainer(tiny_gpt2(), args, forget_dataset=forget)
    trainer.train()
    assert [entry["step"] for entry in trainer.influence_history] == [0, math.ceil(len(forget) / 4)]
    assert len(trainer.train_dataset) == len(forget)  # ν > 0 draws from the whole forget set


def test_resume_reuses_checkpointed_weights(forget, tmp_path, monkeypatch):
    args = IMUConfig(output_dir=str(tmp_path), max_steps=4, **{**COMMON, "save_strategy": "steps"}, save_steps=2)
    first = IMUTrainer(tiny_gpt2(), args, forget_dataset=forget)
    first.train()
    assert (tmp_path / "checkpoint-2" / "influence_scores.safetensors").is_file()
    resumed = IMUTrainer(tiny_gpt2(seed=9), args, forget_dataset=forget)  # another model: recomputing would differ

    def fail():
        raise AssertionError("a resumed run must reuse the checkpointed weights")

    monkeypatch.setattr(resumed.weighter, "update", fail)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    torch.testing.assert_close(resumed.sample_weights, first.sample_weights)


def test_no_positive_influence_is_a_clear_error(forget, tmp_path):
    trainer = IMUTrainer(tiny_gpt2(), IMUConfig(output_dir=str(tmp_path), **COMMON), forget_dataset=forget)
    with pytest.raises(ValueError, match="No forget sample has a positive influence"):
        trainer.weighter.set_scores(-torch.ones(len(forget)))


def test_l1_head_penalty_is_added(forget, tmp_path):
    model = tiny_gpt2(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0).eval()
    losses = {}
    for alpha in (0.0, 0.01):
        trainer = IMUTrainer(
            copy.deepcopy(model),
            IMUConfig(output_dir=str(tmp_path), head_l1_weight=alpha, **COMMON),
            forget_dataset=forget,
        )
        trainer.weighter.set_scores(torch.ones(len(forget)))
        trainer.model.eval()
        losses[alpha] = trainer.compute_loss(trainer.model, trainer.data_collator([trainer.train_dataset[0]])).item()
    assert losses[0.01] - losses[0.0] == pytest.approx(0.01 * model.lm_head.weight.abs().sum().item(), rel=1e-5)


def test_config_validation():
    with pytest.raises(ValueError, match="psi"):
        IMUConfig(output_dir="x", influence_weighting={"psi": "log"})
    with pytest.raises(ValueError, match="top_ratio"):
        IMUConfig(output_dir="x", influence_weighting={"top_ratio": 0})
    with pytest.raises(ValueError, match="trainable"):
        IMUConfig(output_dir="x", trainable="body")
    with pytest.raises(ValueError, match="IMU without influence weights is GA"):
        IMUConfig(output_dir="x", influence_weighting=None)
    with pytest.raises(ValueError, match="unknown keys \\['influence_batch_size'\\]"):
        IMUConfig(output_dir="x", influence_weighting={"influence_batch_size": 4})


def test_permutation_control_shuffles_weights(forget, tmp_path):
    scores = torch.linspace(-1.0, 2.0, len(forget))
    trainers = [
        IMUTrainer(
            tiny_gpt2(),
            IMUConfig(output_dir=str(tmp_path), influence_weighting={"permutation_seed": seed}, **COMMON),
            forget_dataset=forget,
        )
        for seed in (None, 0)
    ]
    for trainer in trainers:
        trainer.weighter.set_scores(scores)
    plain, permuted = (trainer.sample_weights for trainer in trainers)
    assert not torch.equal(plain, permuted)
    torch.testing.assert_close(plain.sort().values, permuted.sort().values)
    assert trainers[1].train_dataset.indices == torch.nonzero(permuted > 0).flatten().tolist()
