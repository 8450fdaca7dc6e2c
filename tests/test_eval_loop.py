"""The standard evaluation loop of the trainers: eval losses, metric callbacks, best checkpoint, early stopping,
stopping at a target and the collapse guard, on a tiny GPT-2."""

import copy
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import EarlyStoppingCallback

from hf_unlearn import GAConfig, GATrainer, GradDiffConfig, GradDiffTrainer, NPOConfig, NPOTrainer
from hf_unlearn.callbacks import (
    CollapseGuardCallback,
    EvalMetricsCallback,
    MetricCondition,
    StopAtTargetCallback,
    StopOnMetricCallback,
)
from hf_unlearn.utils import sequence_nll

COMMON = {"per_device_train_batch_size": 4, "report_to": "none", "disable_tqdm": True}


def mean_example_nll(model, dataset):
    """Mean over examples of each example's token-mean answer NLL, one example at a time (no padding)."""
    model.eval()
    values = []
    with torch.no_grad():
        for example in dataset:
            ids, labels = torch.tensor([example["input_ids"]]), torch.tensor([example["labels"]])
            nll, count = sequence_nll(model(input_ids=ids).logits, labels)
            values.append((nll / count).item())
    return sum(values) / len(values)


def test_evaluate_gives_forget_and_retain_losses(model, forget_dataset, retain_dataset, tmp_path):
    args = NPOConfig(output_dir=str(tmp_path), per_device_eval_batch_size=3, save_strategy="no", **COMMON)
    trainer = NPOTrainer(model, args, forget_dataset=forget_dataset, retain_dataset=retain_dataset)
    metrics = trainer.evaluate({"forget": forget_dataset, "retain": retain_dataset})
    # Batches of 3 with padding give the per-example mean, whatever the batch size.
    assert metrics["eval_forget_loss"] == pytest.approx(mean_example_nll(model, forget_dataset), rel=1e-5)
    assert metrics["eval_retain_loss"] == pytest.approx(mean_example_nll(model, retain_dataset), rel=1e-5)
    assert trainer.evaluate(forget_dataset)["eval_loss"] == pytest.approx(metrics["eval_forget_loss"], rel=1e-6)
    # Without eval_dataset the forget and retain sets are evaluated.
    assert trainer.evaluate().keys() >= {"eval_forget_loss", "eval_retain_loss"}
    # Training metrics recorded since the last training log are not swallowed by an evaluation log.
    trainer.record("forget_nll", 1.0)
    trainer.evaluate()
    assert trainer._metrics["forget_nll"] == [1.0]


def test_eval_strategy_runs_during_training(model, forget_dataset, retain_dataset, tmp_path):
    args = GradDiffConfig(
        output_dir=str(tmp_path), max_steps=4, eval_strategy="steps", eval_steps=2, save_strategy="no", **COMMON
    )
    trainer = GradDiffTrainer(
        model,
        args,
        forget_dataset=forget_dataset,
        retain_dataset=retain_dataset,
        eval_dataset={"forget": forget_dataset},
    )
    trainer.train()
    evals = [entry for entry in trainer.state.log_history if "eval_forget_loss" in entry]
    assert [entry["step"] for entry in evals] == [2, 4]
    assert evals[-1]["eval_forget_loss"] == pytest.approx(mean_example_nll(trainer.model, forget_dataset), rel=1e-5)


class PeakedScore(EvalMetricsCallback):
    """A metric that peaks at step 2, to check which checkpoint is kept."""

    def __init__(self):
        self.calls = 0

    def compute_metrics(self, model, processing_class, args, state):
        self.calls += 1
        return {"score": {0: 0.0, 1: 1.0, 2: 3.0, 3: 2.0, 4: 1.0}[state.global_step]}


def test_metric_callback_selects_best_checkpoint_and_stops_early(model, forget_dataset, retain_dataset, tmp_path):
    score = PeakedScore()
    args = GAConfig(
        output_dir=str(tmp_path),
        learning_rate=5e-3,
        max_steps=6,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="score",
        greater_is_better=True,
        **COMMON,
    )
    # EarlyStoppingCallback first: the trainer's metrics are computed before any on_evaluate runs.
    trainer = GATrainer(
        model,
        args,
        forget_dataset=forget_dataset,
        eval_dataset={"forget": forget_dataset, "retain": retain_dataset},
        callbacks=[EarlyStoppingCallback(early_stopping_patience=2), score],
    )
    trainer.train()
    # Two datasets, one metric computation per evaluation, logged once per evaluation.
    assert score.calls == 4
    logged = [entry for entry in trainer.state.log_history if "eval_score" in entry]
    assert [entry["step"] for entry in logged] == [1, 2, 3, 4]
    assert trainer.state.global_step == 4  # no improvement at steps 3 and 4: patience 2 stops
    assert Path(trainer.state.best_model_checkpoint).name == "checkpoint-2"
    best = load_file(str(Path(trainer.state.best_model_checkpoint) / "model.safetensors"))
    torch.testing.assert_close(trainer.model.lm_head.weight.detach(), best["transformer.wte.weight"])


def test_conditions_parse_and_fail_clearly():
    assert MetricCondition.parse("forget_Q_A_Prob <= 0.05") == MetricCondition("forget_Q_A_Prob", "<=", 0.05)
    assert MetricCondition.parse("eval_retain_loss>1.5x") == MetricCondition("eval_retain_loss", ">", 1.5, True)
    assert MetricCondition.parse(("forget_quality", ">=", 0.1)).holds(0.1, first=0.0)
    condition = MetricCondition.parse("retain_loss > 1.5x")
    assert condition.find({"eval_retain_loss": 2.0}) == "eval_retain_loss"
    assert condition.find({"retain_loss": 2.0, "eval_retain_loss": 3.0}) == "retain_loss"
    assert condition.holds(3.1, first=2.0) and not condition.holds(2.9, first=2.0)
    for bad in ("forget_quality", "forget_quality => 0.1", "loss < high"):
        with pytest.raises(ValueError, match="Cannot read the condition"):
            MetricCondition.parse(bad)
    with pytest.raises(ValueError, match="Unknown comparison"):
        MetricCondition("loss", "==", 1.0)
    with pytest.raises(ValueError, match="at least one condition"):
        StopAtTargetCallback()
    with pytest.raises(ValueError, match="require"):
        StopOnMetricCallback("loss < 1", require="most")


def _ga(model, forget_dataset, retain_dataset, tmp_path, callbacks, **settings):
    args = GAConfig(
        output_dir=str(tmp_path), learning_rate=5e-3, max_steps=20, logging_steps=1, save_strategy="no", **COMMON
    )
    for key, value in settings.items():
        setattr(args, key, value)
    return GATrainer(
        model,
        args,
        forget_dataset=forget_dataset,
        eval_dataset={"forget": forget_dataset, "retain": retain_dataset},
        callbacks=callbacks,
    )


def test_stop_at_target_on_a_training_metric(model, forget_dataset, retain_dataset, tmp_path, caplog):
    start = mean_example_nll(copy.deepcopy(model), forget_dataset)
    target = StopAtTargetCallback(f"forget_nll >= {start + 0.3}")
    trainer = _ga(model, forget_dataset, retain_dataset, tmp_path, [target])
    with caplog.at_level(logging.WARNING, logger="hf_unlearn.callbacks"):
        trainer.train()
    step = target.stopped["step"]
    assert 1 < step < 20 and trainer.state.global_step == step
    assert target.stopped["values"]["forget_nll"] >= start + 0.3
    # It stopped at the first log that met the target.
    logged = [entry["forget_nll"] for entry in trainer.state.log_history if "forget_nll" in entry]
    assert all(value < start + 0.3 for value in logged[:-1]) and logged[-1] >= start + 0.3
    assert "Unlearning target reached at step" in caplog.text


def test_require_all_waits_for_every_condition(model, forget_dataset, retain_dataset, tmp_path):
    start = mean_example_nll(copy.deepcopy(model), forget_dataset)
    either = StopOnMetricCallback(f"forget_nll >= {start + 0.1}", "loss > 1e9")
    both = StopOnMetricCallback(f"forget_nll >= {start + 0.1}", "loss > 1e9", require="all")
    trainer = _ga(model, forget_dataset, retain_dataset, tmp_path, [both, either], max_steps=6)
    trainer.train()
    assert either.stopped is not None and both.stopped is None


def test_collapse_guard_stops_and_warns_on_eval_retain_loss(model, forget_dataset, retain_dataset, tmp_path, caplog):
    guard = CollapseGuardCallback("eval_retain_loss > 1.05x")
    trainer = _ga(
        model, forget_dataset, retain_dataset, tmp_path, [guard], eval_strategy="steps", eval_steps=1, max_steps=40
    )
    with caplog.at_level(logging.WARNING, logger="hf_unlearn.callbacks"):
        trainer.train()
    retain = [entry["eval_retain_loss"] for entry in trainer.state.log_history if "eval_retain_loss" in entry]
    assert guard.stopped is not None and trainer.state.global_step == guard.stopped["step"] < 40
    assert retain[-1] > 1.05 * retain[0] and all(value <= 1.05 * retain[0] for value in retain[:-1])
    assert "Collapse guard at step" in caplog.text and "eval_retain_loss" in caplog.text
