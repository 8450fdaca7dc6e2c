"""Trainers on a tiny GPT-2: reference equivalence, that a step forgets, config and input validation."""

import copy

import pytest
import torch

from hf_unlearn import (
    GAConfig,
    GATrainer,
    GradDiffConfig,
    GradDiffTrainer,
    NPOConfig,
    NPOTrainer,
    SimNPOConfig,
    SimNPOTrainer,
    UnlearnConfig,
)
from hf_unlearn.data.pairing import ForgetRetainDataset
from hf_unlearn.utils import sequence_nll

from .conftest import lm_dataset, tiny_gpt2

COMMON = {"per_device_train_batch_size": 4, "report_to": "none", "save_strategy": "no", "disable_tqdm": True}


def first_batch(trainer):
    """The first four examples, collated as the trainer's dataloader would (deterministic, unlike its sampler)."""
    return trainer.data_collator([trainer.train_dataset[i] for i in range(4)])


def perturb(model, seed=3):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def mean_forget_nll(model, dataset):
    model.eval()
    with torch.no_grad():
        total, count = 0.0, 0
        for example in dataset:
            ids = torch.tensor([example["input_ids"]])
            nll, n = sequence_nll(model(input_ids=ids).logits, torch.tensor([example["labels"]]))
            total, count = total + nll.item(), count + n.item()
    return total / count


def test_npo_precomputed_reference_equals_live(model, forget_dataset, tmp_path):
    losses = {}
    for reference in ("precomputed", "live"):
        args = NPOConfig(
            output_dir=str(tmp_path / reference), beta=0.5, retain_loss="none", reference=reference, **COMMON
        )
        trainer = NPOTrainer(copy.deepcopy(model), args, forget_dataset=forget_dataset)
        assert (trainer.ref_model is None) == (reference == "precomputed")
        perturb(trainer.model)  # π_θ ≠ π_ref, so the reference actually matters
        trainer.model.eval()  # no dropout: both runs see the same policy
        losses[reference] = trainer.compute_loss(trainer.model, first_batch(trainer)).item()
    assert losses["precomputed"] == pytest.approx(losses["live"], rel=1e-6)
    assert losses["live"] != pytest.approx(2 / 0.5 * torch.log(torch.tensor(2.0)).item(), rel=1e-3)


def test_npo_peft_reference_uses_disabled_adapter(model, forget_dataset, tmp_path):
    from peft import LoraConfig

    losses = {}
    for reference in ("precomputed", "live"):
        args = NPOConfig(output_dir=str(tmp_path / reference), retain_loss="none", reference=reference, **COMMON)
        lora = LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)
        torch.manual_seed(0)
        trainer = NPOTrainer(copy.deepcopy(model), args, forget_dataset=forget_dataset, peft_config=lora)
        assert trainer.ref_model is None  # the base model under the disabled adapter is the reference
        trainer.model.eval()
        losses[reference] = trainer.compute_loss(trainer.model, first_batch(trainer)).item()
    assert losses["precomputed"] == pytest.approx(losses["live"], rel=1e-6)


METHODS = [
    (GAConfig, GATrainer, {}),
    (GradDiffConfig, GradDiffTrainer, {}),
    (NPOConfig, NPOTrainer, {"beta": 1.0}),
    (SimNPOConfig, SimNPOTrainer, {"beta": 1.0, "forget_loss_coefficient": 1.0}),
    (NPOConfig, NPOTrainer, {"retain_loss": "kl"}),
]


@pytest.mark.parametrize("config_class, trainer_class, settings", METHODS, ids=lambda v: getattr(v, "__name__", ""))
def test_training_steps_raise_forget_nll(
    config_class, trainer_class, settings, model, forget_dataset, retain_dataset, tmp_path
):
    before = mean_forget_nll(model, forget_dataset)
    args = config_class(
        output_dir=str(tmp_path), learning_rate=5e-3, max_steps=4, logging_steps=1, **settings, **COMMON
    )
    trainer = trainer_class(model, args, forget_dataset=forget_dataset, retain_dataset=retain_dataset)
    trainer.train()
    assert mean_forget_nll(model, forget_dataset) > before + 0.05
    logged = [entry for entry in trainer.state.log_history if "forget_nll" in entry]
    assert len(logged) == 4 and all(entry["loss"] == entry["loss"] for entry in logged)
    if args.retain_loss != "none":
        assert all(f"retain_{args.retain_loss}" in entry for entry in logged)


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    """The loss is a micro-batch mean, so Trainer must divide it by the accumulation steps: with equal-length
    examples, 2 micro-batches of 2 give exactly the update of one batch of 4."""
    model = tiny_gpt2(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    generator = torch.Generator().manual_seed(5)
    forget = lm_dataset([torch.randint(0, 10, (8,), generator=generator).tolist() for _ in range(4)], prompt_length=2)
    updates = []
    for batch, accumulation in ((4, 1), (2, 2)):
        args = GAConfig(
            output_dir=str(tmp_path),
            learning_rate=1e-2,
            max_steps=1,
            optim="sgd",
            max_grad_norm=0.0,
            **{**COMMON, "per_device_train_batch_size": batch},
            gradient_accumulation_steps=accumulation,
        )
        trained = copy.deepcopy(model)
        GATrainer(trained, args, forget_dataset=forget).train()
        updates.append(trained.lm_head.weight.detach() - model.lm_head.weight.detach())
    assert updates[0].abs().max() > 1e-4
    torch.testing.assert_close(updates[1], updates[0], rtol=1e-4, atol=1e-7)


def test_config_validation_names_field():
    with pytest.raises(ValueError, match="beta"):
        NPOConfig(output_dir="x", beta=0)
    with pytest.raises(ValueError, match="retain_loss"):
        GradDiffConfig(output_dir="x", retain_loss="none")
    with pytest.raises(ValueError, match="retain_loss"):
        UnlearnConfig(output_dir="x", retain_loss="l2")
    with pytest.raises(ValueError, match="reference"):
        NPOConfig(output_dir="x", reference="cached")
    with pytest.raises(ValueError, match="forget_loss_coefficient"):
        SimNPOConfig(output_dir="x", forget_loss_coefficient=0)


def test_bad_datasets_fail_clearly(model, forget_dataset, tmp_path):
    args = GAConfig(output_dir=str(tmp_path), **COMMON)
    with pytest.raises(ValueError, match="missing column.*labels"):
        GATrainer(model, args, forget_dataset=forget_dataset.remove_columns("labels"))
    with pytest.raises(ValueError, match="empty"):
        GATrainer(model, args, forget_dataset=forget_dataset.select([]))
    with pytest.raises(ValueError, match="no target token"):
        GATrainer(model, args, forget_dataset=lm_dataset([[1, 2, 3]], prompt_length=3))
    with pytest.raises(ValueError, match="retain_dataset"):
        GradDiffTrainer(model, GradDiffConfig(output_dir=str(tmp_path), **COMMON), forget_dataset=forget_dataset)


def test_missing_pad_token_fails_clearly(forget_dataset, tmp_path):
    model = tiny_gpt2()
    model.config.pad_token_id = None
    with pytest.raises(ValueError, match="pad"):
        GATrainer(model, GAConfig(output_dir=str(tmp_path), **COMMON), forget_dataset=forget_dataset)


def test_nan_loss_fails_clearly(model, forget_dataset, tmp_path):
    """Finite weights, NaN logits (a hook): the loss check names the step, not a later optimizer error."""
    model.lm_head.register_forward_hook(lambda module, args, output: output * float("nan"))
    trainer = GATrainer(model, GAConfig(output_dir=str(tmp_path), max_steps=1, **COMMON), forget_dataset=forget_dataset)
    with pytest.raises(FloatingPointError, match="unlearning loss is nan"):
        trainer.train()


def test_non_finite_weights_fail_before_training(model, forget_dataset, tmp_path):
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite weights"):
        GATrainer(model, GAConfig(output_dir=str(tmp_path), max_steps=1, **COMMON), forget_dataset=forget_dataset)


def test_pairing_is_reproducible_and_redrawn_each_epoch(forget_dataset, retain_dataset):
    a = ForgetRetainDataset(forget_dataset, retain_dataset, seed=0)
    b = ForgetRetainDataset(forget_dataset, retain_dataset, seed=0)
    first = [a.retain_index(i) for i in range(len(a))]
    assert first == [b.retain_index(i) for i in range(len(b))]
    a.set_epoch(1)
    assert first != [a.retain_index(i) for i in range(len(a))]
    assert a[3]["index"] == 3 and a[3]["forget"] == forget_dataset[3]


def test_npo_with_kl_retain_term_keeps_its_reference(model, forget_dataset, retain_dataset, tmp_path):
    """Precomputed NPO log-probs and a live KL reference coexist (the reference must survive the precomputation)."""
    args = NPOConfig(output_dir=str(tmp_path), retain_loss="kl", reference="precomputed", max_steps=2, **COMMON)
    trainer = NPOTrainer(
        model, args, forget_dataset=forget_dataset, retain_dataset=retain_dataset, ref_model=copy.deepcopy(model)
    )
    assert trainer.ref_forget_nll is not None and trainer.ref_model is not None
    trainer.train()
