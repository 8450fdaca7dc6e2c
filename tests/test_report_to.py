"""`report_to` integrations from the optional extras (`hf-unlearn[tensorboard]`, `[trackio]`): the method's own metrics
and the evaluation losses reach them. Skipped where the extra is not installed."""

import json
import sqlite3

import pytest

from hf_unlearn import NPOConfig, NPOTrainer

COMMON = {"per_device_train_batch_size": 4, "save_strategy": "no", "disable_tqdm": True, "max_steps": 2}


def _train(model, forget_dataset, retain_dataset, tmp_path, report_to):
    args = NPOConfig(
        output_dir=str(tmp_path), report_to=report_to, logging_steps=1, eval_strategy="steps", eval_steps=2, **COMMON
    )
    trainer = NPOTrainer(model, args, forget_dataset=forget_dataset, retain_dataset=retain_dataset)
    trainer.train()
    return trainer


def test_tensorboard_receives_training_and_evaluation_metrics(
    model, forget_dataset, retain_dataset, tmp_path, monkeypatch
):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "runs"))
    _train(model, forget_dataset, retain_dataset, tmp_path, "tensorboard")
    events = event_accumulator.EventAccumulator(str(tmp_path / "runs"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/forget_nll", "train/log_ratio", "train/retain_nll", "eval/forget_loss", "eval/retain_loss"} <= tags
    assert [event.step for event in events.Scalars("train/forget_nll")] == [1, 2]


def test_trackio_runs_locally(model, forget_dataset, retain_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))  # read when trackio is imported
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pytest.importorskip("trackio")
    trainer = _train(model, forget_dataset, retain_dataset, tmp_path, "trackio")
    assert any(type(c).__name__ == "TrackioCallback" for c in trainer.callback_handler.callbacks)
    assert any("eval_forget_loss" in entry for entry in trainer.state.log_history)
    # Written locally (nothing sent): trackio's SQLite file holds the method's metrics and the evaluation losses.
    (database,) = (tmp_path / "trackio").glob("*.db")
    with sqlite3.connect(database) as connection:
        logged = set().union(*(json.loads(row[0]) for row in connection.execute("select metrics from metrics")))
    assert {"train/forget_nll", "train/log_ratio", "eval/forget_loss", "eval/retain_loss"} <= logged
