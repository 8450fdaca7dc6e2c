"""IMU's sample weights on top of the token-weighted losses (SatImp, WGA) through the shared `influence_weighting`
option, against hand computations; the intervals over seeds of the weighting study."""

import math

import pytest
import torch

from hf_unlearn import SatImpConfig, SatImpTrainer, WGAConfig, WGATrainer
from hf_unlearn.influence import influence_weights
from hf_unlearn.tasks.markov import mean_interval, welch_interval

from .conftest import tiny_gpt2

COMMON = {
    "per_device_train_batch_size": 4,
    "report_to": "none",
    "save_strategy": "no",
    "disable_tqdm": True,
    "learning_rate": 1e-2,
    "max_steps": 3,
    "retain_loss": "none",
}
SCORES = torch.tensor([0.5, -1.0, 2.0, 1.0, 0.0, 3.0, 0.25, 1.5])


def weighted_batch_loss(trainer):
    """The trainer's loss on its first batch, that batch, and the weights ŵ of its rows."""
    trainer.weighter.set_scores(SCORES)
    trainer.model.eval()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    loss = trainer.compute_loss(trainer.model, batch).item()
    return loss, batch, influence_weights(SCORES, "none")[batch["index"]]


def per_token_probabilities(model, forget):
    """p_t of every labelled token of each row, as a list per row (the causal shift by hand)."""
    with torch.no_grad():
        probs = model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"]).logits.softmax(-1)
    rows = []
    for b in range(len(forget["labels"])):
        labels = forget["labels"][b].tolist()
        rows.append([probs[b, t - 1, labels[t]].item() for t in range(1, len(labels)) if labels[t] != -100])
    return rows


@pytest.mark.parametrize("method", ["SatImp", "WGA"])
def test_imu_weights_on_a_token_weighted_loss_equal_the_hand_computed_loss(forget_dataset, tmp_path, method):
    model = tiny_gpt2(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    if method == "SatImp":
        args = SatImpConfig(
            output_dir=str(tmp_path), beta1=2.0, beta2=1.0, forget_loss_weight=0.5,
            influence_weighting={"psi": "none"}, **COMMON,
        )  # fmt: skip
        trainer = SatImpTrainer(model, args, forget_dataset=forget_dataset)

        def token_weight(p):
            return p**2.0 * (1 - p) ** 1.0
    else:
        args = WGAConfig(
            output_dir=str(tmp_path), beta=0.5, forget_loss_weight=0.5, influence_weighting={"psi": "none"}, **COMMON
        )
        trainer = WGATrainer(model, args, forget_dataset=forget_dataset)

        def token_weight(p):
            return p**0.5

    loss, batch, weights = weighted_batch_loss(trainer)
    # Row i's term: the mean over its labelled tokens of w_t·log p_t; the rows weighted by ŵ_i / Σ ŵ, times γ.
    rows = per_token_probabilities(model, batch["forget"])
    terms = [sum(token_weight(p) * math.log(p) for p in row) / len(row) for row in rows]
    expected = 0.5 * sum(w * term for w, term in zip(weights.tolist(), terms)) / weights.sum().item()
    assert loss == pytest.approx(expected, rel=1e-5)
    assert trainer.train_dataset.indices == [0, 2, 3, 5, 6, 7]  # ν = 0: only the positive-score samples are drawn


def test_imu_weights_on_satimp_train_and_are_permuted_by_the_control(forget_dataset, tmp_path):
    weights = {}
    for name, extra in {"plain": {}, "permuted": {"permutation_seed": 4}}.items():
        args = SatImpConfig(output_dir=str(tmp_path / name), influence_weighting={"psi": "sqrt", **extra}, **COMMON)
        trainer = SatImpTrainer(tiny_gpt2(), args, forget_dataset=forget_dataset)
        trainer.train()
        assert trainer.state.global_step == 3
        weights[name] = trainer.sample_weights
    assert not torch.equal(weights["plain"], weights["permuted"])
    torch.testing.assert_close(weights["plain"].sort().values, weights["permuted"].sort().values)


def test_mean_interval_by_hand():
    result = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # mean 3, s = √2.5, t_{0.975, 4} = 2.776445 (tables): half-width 2.776445·√2.5/√5 = 1.963243
    assert result["mean"] == 3.0 and result["sd"] == pytest.approx(math.sqrt(2.5))
    assert result["ci"] == pytest.approx([3.0 - 1.963243, 3.0 + 1.963243], abs=1e-5)
    assert math.isnan(mean_interval([2.0])["ci"][0])
    with pytest.raises(ValueError):
        mean_interval([])


def test_welch_interval_by_hand():
    result = welch_interval([1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0])
    # se² = 1/3 + 5/3 = 2; df = 2² / ((1/3)²/2 + (5/3)²/3) = 4 / (1/18 + 25/27) = 216 / 53 = 4.0755
    assert result["difference"] == -3.0
    assert result["df"] == pytest.approx(216 / 53)
    half = (result["ci"][1] - result["ci"][0]) / 2
    # t_{0.975} lies between its table values for 4 (2.776) and 5 (2.571) degrees of freedom.
    assert 2.571 * math.sqrt(2) < half < 2.776 * math.sqrt(2)
    assert welch_interval([1.0, 1.0], [0.0, 0.0]) == {"difference": 1.0, "ci": [1.0, 1.0], "df": math.inf}
