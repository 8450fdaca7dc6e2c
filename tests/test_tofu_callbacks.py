"""`TofuEvalCallback` on a tiny Llama and the vendored TOFU fixture: the trainer's metrics are `evaluate_tofu`'s,
logged once per evaluation, and choose the best checkpoint."""

from pathlib import Path

import pytest
from safetensors.torch import load_file

from hf_unlearn import NPOConfig, NPOTrainer
from hf_unlearn.callbacks import TofuEvalCallback as ReExported
from hf_unlearn.data.tofu import TofuFormat, load_tofu
from hf_unlearn.evaluation.tofu import TofuEvalArguments, TofuEvalCallback, evaluate_tofu
from hf_unlearn.tasks.tofu.eval_stage import evaluate_tofu_stage

from .tofu_helpers import FIXTURE_DIR, make_model, make_tokenizer

CHEAP = TofuEvalArguments(compute_rouge=False, batch_size=8)


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def retain_logs(tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("retain")
    evaluate_tofu_stage(
        make_model(tokenizer, seed=1), tokenizer, CHEAP, data_dir=FIXTURE_DIR, output_dir=folder, show_progress=False
    )
    return folder


def _trainer(tokenizer, tmp_path, callback, **settings):
    args = NPOConfig(
        output_dir=str(tmp_path),
        learning_rate=2e-2,
        per_device_train_batch_size=5,
        report_to="none",
        disable_tqdm=True,
        dataset_kwargs=TofuFormat().chat_format().kwargs(),  # train on the formatting the evaluation uses
        **settings,
    )
    return NPOTrainer(
        make_model(tokenizer),
        args,
        forget_dataset=load_tofu("forget05", FIXTURE_DIR),
        retain_dataset=load_tofu("retain_perturbed", FIXTURE_DIR).select_columns(["question", "answer"]),
        processing_class=tokenizer,
        callbacks=[callback],
    )


def test_metrics_are_evaluate_tofus(tokenizer, retain_logs, tmp_path):
    assert ReExported is TofuEvalCallback
    callback = TofuEvalCallback(CHEAP, data_dir=FIXTURE_DIR, retain_logs=retain_logs)
    trainer = _trainer(tokenizer, tmp_path, callback, save_strategy="no")
    metrics = trainer.evaluate()
    direct = evaluate_tofu(
        trainer.model, tokenizer, CHEAP, data_dir=FIXTURE_DIR, retain_logs=retain_logs, show_progress=False
    )
    for name in ("forget_quality", "forget_Q_A_Prob", "forget_truth_ratio", "retain_Q_A_Prob", "mia_min_k", "privleak"):
        assert metrics[f"eval_{name}"] == pytest.approx(direct[name], rel=1e-6)
    assert "eval_model_utility" not in metrics  # None without generation: left out
    assert callback.history[0]["step"] == 0 and callback.history[0]["forget_quality"] == metrics["eval_forget_quality"]


def test_best_checkpoint_by_a_tofu_metric(tokenizer, retain_logs, tmp_path):
    seen = []

    def evaluate_fn(model, tokenizer, eval_args, **kwargs):
        seen.append(eval_args)
        return evaluate_tofu(model, tokenizer, eval_args, **kwargs)

    callback = TofuEvalCallback(
        CHEAP,
        data_dir=FIXTURE_DIR,
        retain_logs=retain_logs,
        metrics=["forget_Q_A_Prob", "retain_Q_A_Prob"],
        score=lambda m: m["retain_Q_A_Prob"] - m["forget_Q_A_Prob"],
        evaluate_fn=evaluate_fn,
    )
    trainer = _trainer(
        tokenizer,
        tmp_path,
        callback,
        max_steps=3,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="score",
        greater_is_better=True,
    )
    trainer.train()
    assert len(seen) == 3 and all(args is CHEAP for args in seen)
    logged = [entry for entry in trainer.state.log_history if "eval_score" in entry]
    assert [entry["step"] for entry in logged] == [1, 2, 3]  # once per evaluation (forget and retain sets)
    assert set(logged[0]) >= {"eval_forget_Q_A_Prob", "eval_retain_Q_A_Prob", "eval_forget_loss"}
    assert "eval_forget_quality" not in logged[0]  # only the metrics asked for
    best = max(logged, key=lambda entry: entry["eval_score"])
    assert Path(trainer.state.best_model_checkpoint).name == f"checkpoint-{best['step']}"
    weights = load_file(str(Path(trainer.state.best_model_checkpoint) / "model.safetensors"))
    assert all((trainer.model.state_dict()[name] == value).all() for name, value in weights.items())
