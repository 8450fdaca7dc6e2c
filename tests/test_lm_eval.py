"""lm-eval through `hf_unlearn.evaluation.lm_eval` and `hf-unlearn eval --lm-eval-tasks`: a local three-question
multiple-choice task (`tests/fixtures/lm_eval/`) on a tiny model, its accuracy checked against a brute-force
computation (sum of the log-probs of each choice's tokens after the question). Skipped without lm-eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")

from hf_unlearn.cli import main
from hf_unlearn.evaluation.lm_eval import LmEvalArguments, evaluate_lm_eval
from tests.tofu_helpers import make_model, make_tokenizer, save_tiny_model

FIXTURE = Path(__file__).parent / "fixtures" / "lm_eval"


def _brute_force_accuracy(model, tokenizer) -> float:
    """lm-eval's multiple choice: context `Question: q\\nAnswer:`, continuation `" " + choice`; the choice with the
    largest summed log-prob wins (ties: the first)."""
    rows = [json.loads(line) for line in (FIXTURE / "tiny_mc.jsonl").read_text().splitlines()]
    correct = 0
    for row in rows:
        context = f"Question: {row['question']}\nAnswer:"
        scores = []
        for choice in row["choices"]:
            context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
            whole = tokenizer(context + " " + choice, add_special_tokens=False)["input_ids"]
            continuation = whole[len(context_ids) :]
            ids = torch.tensor([context_ids + continuation])
            with torch.no_grad():
                logps = torch.log_softmax(model(ids).logits[0].double(), -1)
            positions = range(len(context_ids) - 1, ids.shape[1] - 1)
            scores.append(sum(float(logps[p, ids[0, p + 1]]) for p in positions))
        correct += int(max(range(len(scores)), key=lambda i: (scores[i], -i)) == row["answer"])
    return correct / len(rows)


@pytest.fixture
def in_fixture_folder(monkeypatch):
    monkeypatch.chdir(FIXTURE)  # the task's data_files path is relative to the working directory
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _taught(tokenizer, seed: int = 0):
    """The tiny model after a few steps on the right answers (so lm-eval must find them: accuracy 1)."""
    model = make_model(tokenizer, seed=seed)
    rows = [json.loads(line) for line in (FIXTURE / "tiny_mc.jsonl").read_text().splitlines()]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(20):
        for row in rows:
            ids = torch.tensor(
                [tokenizer(f"Question: {row['question']}\nAnswer: {row['choices'][row['answer']]}")["input_ids"]]
            )
            model(ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def test_lm_eval_accuracy_matches_brute_force(in_fixture_folder):
    tokenizer = make_tokenizer()
    accuracies = []
    for model in (make_model(tokenizer, seed=0), _taught(tokenizer)):
        scores = evaluate_lm_eval(model, tokenizer, LmEvalArguments(tasks=["tiny_mc"], include_path=str(FIXTURE)))
        assert scores["tiny_mc"]["acc"] == pytest.approx(_brute_force_accuracy(model, tokenizer))
        accuracies.append(scores["tiny_mc"]["acc"])
    assert accuracies[1] == 1.0 and accuracies[0] < 1.0  # the check is not of a constant


def test_eval_command_runs_a_local_lm_eval_task(in_fixture_folder, tmp_path, capsys):
    folder = save_tiny_model(tmp_path / "model")
    out = tmp_path / "out"
    code = main(
        ["eval", "--model", str(folder), "--output-dir", str(out), "--lm-eval-tasks", "tiny_mc",
         "--lm-eval-include-path", str(FIXTURE)]
    )  # fmt: skip
    assert code == 0
    result = json.loads((out / "lm_eval.json").read_text())
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    assert result["scores"]["tiny_mc"]["acc"] == pytest.approx(_brute_force_accuracy(model, make_tokenizer()))
    assert "| tiny_mc |" in capsys.readouterr().out


def test_lm_eval_arguments_refuse_bad_values():
    assert LmEvalArguments(tasks="wmdp_bio, mmlu").tasks == ["wmdp_bio", "mmlu"]
    with pytest.raises(ValueError, match="tasks"):
        LmEvalArguments(tasks=[])
    with pytest.raises(ValueError, match="limit"):
        LmEvalArguments(tasks=["mmlu"], limit=0)


def test_a_recipe_lm_eval_section_on_local_text_files(in_fixture_folder, tmp_path):
    """`corpus: custom` (the WMDP recipe's shape): local text files, no retain model, no MUSE metrics, an `lm_eval`
    section evaluating the target and every unlearned model."""
    import yaml

    muse = Path(__file__).parent / "fixtures" / "muse" / "raw"
    base = save_tiny_model(tmp_path / "base")
    recipe = {
        "task": "muse",
        "corpus": "custom",
        "output_dir": str(tmp_path / "out"),
        "max_length": 128,
        "models": {
            "base": {"name_or_path": str(base)},
            "target": {"train_data": [{"file": str(muse / "forget.json")}]},
        },
        "finetune": {"learning_rate": 1e-2, "num_train_epochs": 2, "disable_tqdm": True},
        "unlearn_data": {
            "forget": [{"file": str(muse / "forget.json")}],
            "retain": [{"file": str(muse / "retain1.json")}],
        },
        "unlearn": {"learning_rate": 1e-3, "max_steps": 1, "per_device_train_batch_size": 2, "disable_tqdm": True},
        "methods": {"GA": {}},
        "evaluation": {"metrics": []},
        "lm_eval": {"tasks": ["tiny_mc"], "include_path": str(FIXTURE)},
    }
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path)]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["stages"]) == {"finetune/target", "eval/target", "unlearn/GA", "eval/GA"}
    for metrics in (results["models"]["target"]["metrics"], results["methods"]["GA"]["runs"]["forget"]["metrics"]):
        assert metrics["lm_eval"]["tiny_mc"]["acc"] in (0.0, 1 / 3, 2 / 3, 1.0)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "methods" / "GA" / "model")
    acc = results["methods"]["GA"]["runs"]["forget"]["metrics"]["lm_eval"]["tiny_mc"]["acc"]
    assert acc == pytest.approx(_brute_force_accuracy(model, make_tokenizer()))
    assert "tiny_mc acc" in (tmp_path / "out" / "table.md").read_text()
