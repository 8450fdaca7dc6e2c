"""The MUSE task end to end on a tiny Llama and the tiny MUSE folder (`tests/fixtures/muse/`): fine-tune target and
retain on raw text, unlearn, evaluate VerbMem / KnowMem / PrivLeak, the table; a re-run reuses every stage; the
scalability and sustainability protocols; plain-text rows in the trainers; bad recipes refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from datasets import Dataset

from hf_unlearn.cli import main
from hf_unlearn.data import chunk_text_dataset
from hf_unlearn.data.text import chunk_token_ids
from hf_unlearn.runtime.cache import STAMP_FILE
from hf_unlearn.tasks.muse.data import TextSelection, select_texts
from hf_unlearn.tasks.muse.recipe import parse_muse_recipe
from tests.tofu_helpers import make_tokenizer, save_tiny_model

FIXTURE = Path(__file__).parent / "fixtures" / "muse"
RECIPES = Path(__file__).parent.parent / "recipes"


def test_chunk_token_ids_by_hand():
    # 7 tokens, chunks of 4 with BOS 0: [0,1,2,3], [0,4,5,6], wrapping around where a chunk is short.
    assert chunk_token_ids([1, 2, 3, 4, 5, 6, 7], 4, 0) == [[0, 1, 2, 3], [0, 4, 5, 6], [0, 7, 1, 2]]
    assert chunk_token_ids([1, 2, 3, 4], 3, None) == [[1, 2, 3], [4, 1, 2]]
    assert chunk_token_ids([5], 4, None) == [[5, 5, 5, 5]]
    with pytest.raises(ValueError, match="max_length"):
        chunk_token_ids([1], 1, None)


def test_plain_text_rows_reach_the_trainers_as_chunks(tmp_path):
    from hf_unlearn.trainers import GAConfig, GATrainer
    from tests.tofu_helpers import make_model

    tokenizer = make_tokenizer()
    texts = json.loads((FIXTURE / "raw" / "forget.json").read_text())
    chunks = chunk_text_dataset(Dataset.from_dict({"text": texts}), tokenizer, 32)
    ids = tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    assert all(len(row) == 32 and row[0] == tokenizer.bos_token_id for row in chunks["input_ids"])
    assert [t for row in chunks["input_ids"] for t in row[1:]][: len(ids)] == ids
    assert chunks["labels"] == chunks["input_ids"]
    config = GAConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to="none",
        dataset_kwargs={"max_length": 32},
    )  # fmt: skip
    trainer = GATrainer(make_model(tokenizer), config, forget_dataset=Dataset.from_dict({"text": texts}),
                        processing_class=tokenizer)  # fmt: skip
    assert trainer.forget_dataset["input_ids"] == chunks["input_ids"]


def tiny_muse_recipe(base, out, **changes):
    recipe = {
        "task": "muse",
        "corpus": "news",
        "output_dir": str(out),
        "data_dir": str(FIXTURE),
        "seed": 0,
        "max_length": 256,
        "models": {
            "base": {"name_or_path": str(base)},
            "target": {"train_data": [{"split": "forget"}, {"split": "retain1"}]},
            "retain": {"train_data": [{"split": "retain1"}]},
        },
        "finetune": {
            "learning_rate": 1e-2,
            "num_train_epochs": 40,
            "per_device_train_batch_size": 4,
            "disable_tqdm": True,
        },
        "unlearn": {"learning_rate": 1e-3, "max_steps": 2, "per_device_train_batch_size": 2, "disable_tqdm": True},
        "methods": {"GA": {}, "NPO": {"beta": 0.1}},
        "evaluation": {"verbmem_max_new_tokens": 8, "knowmem_max_new_tokens": 4, "batch_size": 4},
    }
    recipe.update(changes)
    return recipe


def _write(recipe, path: Path) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("muse_base") / "base")


def test_muse_task_end_to_end_and_rerun(base, tmp_path, capsys):
    out = tmp_path / "out"
    path = _write(tiny_muse_recipe(base, out), tmp_path / "muse.yaml")
    assert main(["run", str(path)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and results["task"] == "muse"
    target, retain = results["models"]["target"]["metrics"], results["models"]["retain"]["metrics"]
    for metrics in (target, retain):
        assert set(metrics) >= {"verbmem_f", "knowmem_f", "knowmem_r", "privleak", "privleak_auc"}
    # The retain model is the PrivLeak reference: its own PrivLeak is 0 by construction, the target's is measured
    # against its AUC.
    assert retain["privleak"] == pytest.approx(0.0)
    assert target["privleak_reference_auc"] == pytest.approx(retain["privleak_auc"])
    # The target saw the forget articles, the retain model did not: it continues them better.
    assert target["verbmem_f"] > retain["verbmem_f"]
    for label in ("GA", "NPO"):
        run = results["methods"][label]["runs"]["forget"]
        assert run["unlearn_steps"] == 2 and (out / "methods" / label / "model" / "model.safetensors").is_file()
        assert run["metrics"]["privleak_reference_auc"] == pytest.approx(retain["privleak_auc"])
    assert set(results["stages"]) == {
        "finetune/target", "finetune/retain", "eval/retain", "eval/target",
        "unlearn/GA", "eval/GA", "unlearn/NPO", "eval/NPO",
    }  # fmt: skip
    table = (out / "table.md").read_text()
    assert "| GA |" in table and "VerbMem" in table
    # Privacy: no forget text in results.json or the table.
    forget = json.loads((FIXTURE / "raw" / "forget.json").read_text())
    written = (out / "results.json").read_text() + table
    assert not any(text[:40] in written for text in forget)

    capsys.readouterr()
    assert main(["run", str(path)]) == 0
    again = json.loads((out / "results.json").read_text())
    assert all(stage["reused"] for stage in again["stages"].values())
    assert again["methods"]["GA"]["runs"]["forget"]["metrics"] == results["methods"]["GA"]["runs"]["forget"]["metrics"]


def test_muse_sustainability_unlearns_the_folds_in_sequence(base, tmp_path):
    out = tmp_path / "out"
    recipe = tiny_muse_recipe(
        base, out, protocol="sustainability", folds=[1, 2], methods={"GA": {}},
        evaluation={"metrics": ["privleak"], "batch_size": 4},
    )  # fmt: skip
    assert main(["run", str(_write(recipe, tmp_path / "sust.yaml"))]) == 0
    results = json.loads((out / "results.json").read_text())
    runs = results["methods"]["GA"]["runs"]
    assert list(runs) == ["sust_1", "sust_2"] and runs["sust_2"]["forget"] == "sust/forget_2"
    stamp = json.loads((out / "methods" / "GA" / "sust_2" / "model" / STAMP_FILE).read_text())
    first = json.loads((out / "methods" / "GA" / "sust_1" / "model" / STAMP_FILE).read_text())
    # The second fold starts from the first fold's model (its files), not from the target.
    assert stamp["fingerprint"]["start"]["files_sha256"] == first["files_sha256"]


def test_muse_scalability_plan_and_bad_recipes(base, tmp_path, capsys):
    recipe = tiny_muse_recipe(base, tmp_path / "out", protocol="scalability", folds=[1, 3])
    assert main(["run", str(_write(recipe, tmp_path / "scal.yaml")), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "scal/forget_1, scal/forget_3 (each from the target)" in plan
    bad = {
        "protocol": ("scalability", "unlearn_data", {"unlearn_data": {"forget": [{"split": "forget"}]}}),
        "retain": (None, "must not contain forget", {"models": {**recipe["models"], "retain": {"train_data": [{"split": "forget"}]}}}),
        "split": (None, "split must be one of", {"unlearn_data": {"retain": [{"split": "retain9"}]}}),
        "method": (None, "Unknown method", {"methods": {"GAA": {}}}),
    }  # fmt: skip
    for protocol, message, change in bad.values():
        raw = tiny_muse_recipe(base, tmp_path / "out", **change)
        if protocol:
            raw["protocol"] = protocol
        assert main(["run", str(_write(raw, tmp_path / "bad.yaml"))]) == 2
        assert message in capsys.readouterr().err


def test_shipped_muse_and_wmdp_recipes_parse(capsys):
    names = ("news_ga", "news_npo", "news_simnpo", "news_imu", "news_scal_npo", "news_sust_npo")
    assert sorted(p.stem for p in (RECIPES / "muse").glob("*.yaml")) == sorted((*names, "news_cpu_smollm2"))
    for name in names:
        assert main(["run", f"muse/{name}", "--dry-run"]) == 0, name
        assert "MUSE-News (muse-bench/MUSE-News from the Hub)" in capsys.readouterr().out
    assert main(["run", "wmdp/rmu_zephyr", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "RMUTrainer, lr 5e-05, 150 steps, batch 4" in plan and "lm-eval: wmdp_bio, wmdp_cyber, mmlu" in plan
    raw = yaml.safe_load((RECIPES / "muse" / "news_ga.yaml").read_text())
    recipe = parse_muse_recipe(raw, dry_run=True)
    assert recipe.models.target.name_or_path == "muse-bench/MUSE-News_target"
    assert recipe.max_length == 2048


def test_cpu_smollm2_recipe_plan(capsys):
    """The small-scale CPU recipe: two forget articles and one privleak/retain text, the four methods, the cuts."""
    assert main(["run", "muse/news_cpu_smollm2", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert (
        "target: fine-tuned from HuggingFaceTB/SmolLM2-135M-Instruct on raw/forget[140:141] + raw/forget[299:300] + "
        "privleak/retain[0:1] (256-token chunks; lr 0.0003, 2 epochs, batch 4)" in plan
    )
    assert "retain: fine-tuned from HuggingFaceTB/SmolLM2-135M-Instruct on privleak/retain[0:1] (" in plan
    for method in ("GATrainer", "NPOTrainer", "SimNPOTrainer", "IMUTrainer"):
        assert f"{method}, lr 0.0001, 1 epochs, batch 4 x 1" in plan
    assert "IMU-lr1e-3: IMUTrainer, lr 0.001, 1 epochs" in plan and "SimNPO-noretain: SimNPOTrainer" in plan
    recipe = parse_muse_recipe(yaml.safe_load((RECIPES / "muse" / "news_cpu_smollm2.yaml").read_text()), dry_run=True)
    ev = recipe.evaluation
    assert (ev.max_verbmem_items, ev.verbmem_max_new_tokens, ev.max_knowmem_items) == (2, 64, 5)
    assert (ev.max_privleak_items, ev.privleak_max_length) == (10, 128)


def test_privleak_texts_as_training_documents(base, tmp_path, capsys):
    """privleak/retain stands in for raw/retain1 where a copy lacks it; privleak/forget stays out of the retain model."""
    assert select_texts([TextSelection("privleak/retain", rows=[1, 2])], "news", str(FIXTURE)) == [
        json.loads((FIXTURE / "privleak" / "retain.json").read_text())[1]
    ]
    models = {"base": {"name_or_path": str(base)}, "retain": {"train_data": [{"split": "privleak/forget"}]}}
    raw = tiny_muse_recipe(base, tmp_path / "out")
    raw["models"] = {**raw["models"], **models}
    assert main(["run", str(_write(raw, tmp_path / "bad.yaml"))]) == 2
    assert "must not contain forget" in capsys.readouterr().err
