"""`trainable` selections on every method and influence weighting on every forget loss."""

import copy

import pytest
import torch
import torch.nn.functional as F

from hf_unlearn import GAConfig, GATrainer, IMUConfig, IMUTrainer, NPOConfig, NPOTrainer
from hf_unlearn.influence import influence_weights
from hf_unlearn.trainers.trainable import select_layers
from hf_unlearn.utils import sequence_nll

from .conftest import tiny_gpt2

COMMON = {
    "per_device_train_batch_size": 4,
    "report_to": "none",
    "save_strategy": "no",
    "disable_tqdm": True,
    "learning_rate": 1e-2,
    "max_steps": 3,
}


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters(remove_duplicate=False)}


def changed(before, model):
    after = dict(model.named_parameters(remove_duplicate=False))
    return {name for name, value in before.items() if not torch.equal(value, after[name])}


def test_depth_shorthand():
    assert select_layers(28, layers_at_depth=[0.68, 0.75]) == [19, 20, 21]
    assert select_layers(28, layers_at_depth=[0.5]) == [14]
    assert select_layers(4, last_layers=2) == [2, 3]
    assert select_layers(4, layers_at_depth=[0.9, 1.0]) == [3]
    assert select_layers(4) is None
    with pytest.raises(ValueError, match="increasing pair"):
        select_layers(4, layers_at_depth=[0.8, 0.2])
    with pytest.raises(ValueError, match="1..4"):
        select_layers(4, last_layers=5)


def test_patterns_train_exactly_the_named_parameters(forget_dataset, tmp_path):
    model = tiny_gpt2()
    before = snapshot(model)
    args = GAConfig(
        output_dir=str(tmp_path),
        trainable="patterns",
        trainable_patterns=[r"mlp\.c_proj"],
        trainable_last_layers=1,
        **COMMON,
    )
    trainer = GATrainer(model, args, forget_dataset=forget_dataset)
    assert trainer.trainable_names == ["transformer.h.1.mlp.c_proj.bias", "transformer.h.1.mlp.c_proj.weight"]
    trainer.train()
    assert changed(before, model) == set(trainer.trainable_names)


def test_layers_at_depth_with_patterns_on_npo(forget_dataset, tmp_path):
    model = tiny_gpt2(n_layer=4)
    before = snapshot(model)
    args = NPOConfig(
        output_dir=str(tmp_path),
        trainable="patterns",
        trainable_patterns=["attn.c_proj.weight"],
        trainable_layers_at_depth=[0.5, 0.75],
        retain_loss="none",
        **COMMON,
    )
    trainer = NPOTrainer(model, args, forget_dataset=forget_dataset)
    assert trainer.trainable_names == ["transformer.h.2.attn.c_proj.weight", "transformer.h.3.attn.c_proj.weight"]
    trainer.train()
    assert changed(before, model) == set(trainer.trainable_names)


def test_a_head_pattern_unties_the_head(forget_dataset, tmp_path):
    model = tiny_gpt2()
    embeddings = model.transformer.wte.weight.detach().clone()
    args = GAConfig(output_dir=str(tmp_path), trainable="patterns", trainable_patterns=["^lm_head"], **COMMON)
    trainer = GATrainer(model, args, forget_dataset=forget_dataset)
    assert trainer.trainable_names == ["lm_head.weight"]
    trainer.train()
    assert model.lm_head.weight is not model.transformer.wte.weight and not model.config.tie_word_embeddings
    assert torch.equal(model.transformer.wte.weight, embeddings)
    assert not torch.equal(model.lm_head.weight, embeddings)


def test_bad_selections_are_clear_errors(forget_dataset, tmp_path):
    with pytest.raises(ValueError, match="match no parameter"):
        GATrainer(
            tiny_gpt2(),
            GAConfig(output_dir=str(tmp_path), trainable="patterns", trainable_patterns=["q_proj"], **COMMON),
            forget_dataset=forget_dataset,
        )
    with pytest.raises(ValueError, match="needs a PEFT model"):
        GATrainer(
            tiny_gpt2(), GAConfig(output_dir=str(tmp_path), trainable="lora", **COMMON), forget_dataset=forget_dataset
        )
    with pytest.raises(ValueError, match="need trainable='patterns'"):
        GAConfig(output_dir=str(tmp_path), trainable_last_layers=2)
    with pytest.raises(ValueError, match="unknown keys"):
        GAConfig(output_dir=str(tmp_path), influence_weighting={"psy": "sqrt"})


def test_lora_trains_only_the_adapter(forget_dataset, tmp_path):
    from peft import LoraConfig

    trainer = GATrainer(
        tiny_gpt2(),
        GAConfig(output_dir=str(tmp_path), trainable="lora", **COMMON),
        forget_dataset=forget_dataset,
        peft_config=LoraConfig(r=2, target_modules=["c_attn"], lora_dropout=0.0),
    )
    assert trainer.trainable_names and all("lora_" in name for name in trainer.trainable_names)


def test_influence_weighted_npo_equals_the_hand_computed_loss(forget_dataset, tmp_path):
    model, reference = tiny_gpt2(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0), tiny_gpt2(seed=5).eval()
    args = NPOConfig(
        output_dir=str(tmp_path), beta=0.5, retain_loss="none", influence_weighting={"psi": "none"}, **COMMON
    )
    trainer = NPOTrainer(model, args, forget_dataset=forget_dataset, ref_model=copy.deepcopy(reference))
    scores = torch.tensor([0.5, -1.0, 2.0, 1.0, 0.0, 3.0, 0.25, 1.5])
    trainer.weighter.set_scores(scores)
    trainer.model.eval()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    loss = trainer.compute_loss(trainer.model, batch).item()

    weights = influence_weights(scores, "none")[batch["index"]]
    forget = batch["forget"]
    with torch.no_grad():
        policy = sequence_nll(
            model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"]).logits, forget["labels"]
        )[0]
        ref = sequence_nll(
            reference(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"]).logits, forget["labels"]
        )[0]
    terms = F.logsigmoid(0.5 * (policy - ref))
    assert loss == pytest.approx((-(2 / 0.5) * (weights * terms).sum() / weights.sum()).item(), rel=1e-5)
    # Only Df⁺ is drawn (ν = 0): the zero-score and negative-score samples are never in a batch.
    assert trainer.train_dataset.indices == [0, 2, 3, 5, 6, 7]


def test_imu_is_ga_with_influence_weighting(forget_dataset, tmp_path):
    model = tiny_gpt2(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    imu = IMUTrainer(copy.deepcopy(model), IMUConfig(output_dir=str(tmp_path), **COMMON), forget_dataset=forget_dataset)
    preset = imu.args.influence_weighting
    ga = GATrainer(
        copy.deepcopy(model),
        GAConfig(output_dir=str(tmp_path), trainable="head", influence_weighting=preset, **COMMON),
        forget_dataset=forget_dataset,
    )
    imu.train()
    ga.train()
    torch.testing.assert_close(ga.sample_weights, imu.sample_weights)
    torch.testing.assert_close(ga.model.lm_head.weight, imu.model.lm_head.weight)


def test_controls_permute_and_flatten_exactly(forget_dataset, tmp_path):
    scores = torch.tensor([0.5, -1.0, 2.0, 1.0, 0.0, 3.0, 0.25, 1.5])
    weights = {}
    for name, control in {"plain": {}, "uniform": {"uniform": True}, "permuted": {"permutation_seed": 3}}.items():
        trainer = GATrainer(
            tiny_gpt2(),
            GAConfig(output_dir=str(tmp_path), influence_weighting={"top_ratio": 0.5, **control}, **COMMON),
            forget_dataset=forget_dataset,
        )
        trainer.weighter.set_scores(scores)
        weights[name] = trainer.sample_weights
    kept = weights["plain"] > 0
    assert kept.tolist() == [False, False, True, True, False, True, False, True]  # top 4 by score, all positive
    assert torch.equal(weights["uniform"], kept.float())
    assert not torch.equal(weights["permuted"], weights["plain"])
    torch.testing.assert_close(weights["permuted"].sort().values, weights["plain"].sort().values)
    with pytest.raises(ValueError, match="one control"):
        GAConfig(output_dir=str(tmp_path), influence_weighting={"uniform": True, "permutation_seed": 1})
