"""`hf_unlearn.tasks.tofu.iau_step_size` (benchmarks/tofu_iau_step_size.py) on the tiny TOFU fixture: every grid
row is the model one IAU step of that η makes."""

import copy
import json

import pytest

from hf_unlearn import IAUTrainer
from hf_unlearn.data.chat import tokenize_dataset
from hf_unlearn.evaluation.tofu import evaluate_tofu
from hf_unlearn.recipe import build_method_config
from hf_unlearn.tasks.tofu import iau_step_size as benchmark
from hf_unlearn.tasks.tofu.data import select_rows
from hf_unlearn.tasks.tofu.finetune import load_model
from hf_unlearn.tasks.tofu.recipe import ModelSpec, TrajectoryArguments, parse_tofu_recipe

from .test_tofu_pipeline import tiny_recipe, write
from .tofu_helpers import save_tiny_model

IAU = {"normalization": "mean", "max_steps": 1, "optim": "sgd", "max_grad_norm": 0.0, "lr_scheduler_type": "constant"}


def test_matched_step_is_closest_on_a_log_scale():
    grid = {"0.1": {"forget_Q_A_Prob": 0.5}, "1": {"forget_Q_A_Prob": 0.05}, "3": {"forget_Q_A_Prob": 1e-9}}
    assert benchmark.matched_step(grid, 0.1) == "1"  # 0.05 is 2x off, 0.5 is 5x off
    assert benchmark.matched_step(grid, 0.4) == "0.1"
    assert benchmark.matched_step(grid, 1e-7) == "3"


def test_grid_rows_equal_a_real_iau_step_of_each_size(tmp_path):
    base = save_tiny_model(tmp_path / "base")
    given = {"target": {"name_or_path": str(base)}, "retain": {"name_or_path": str(base)}}
    recipe = tiny_recipe(base, tmp_path / "unused", models=given, methods={"IAU": IAU})
    recipe.pop("finetune")
    result = tmp_path / "result.json"
    argv = ["--recipe", write(tmp_path / "r.yaml", recipe), "--grid", "0.3", "30"]
    argv += ["--max-forget-items", "3", "--max-utility-items", "2", "--output", str(result)]
    benchmark.main([*argv, "--work-dir", str(tmp_path / "work")])
    payload = json.loads(result.read_text())
    assert list(payload["eta"]) == ["0", "0.3", "30"]
    assert payload["retain_model"] == payload["eta"]["0"]  # the same tiny model plays target and retain here
    grid = {eta: row for eta, row in payload["eta"].items() if eta != "0"}
    assert payload["matched_eta"] == float(benchmark.matched_step(grid, payload["retain_model"]["forget_Q_A_Prob"]))

    # Independently: IAUTrainer itself at learning rate η, evaluated on the same items.
    plan = parse_tofu_recipe(recipe)
    cheap = TrajectoryArguments(max_forget_items=3, max_utility_items=2).eval_arguments(plan.evaluation)
    model, tokenizer = load_model(ModelSpec(str(base)))
    fmt = plan.formatting.chat_format().kwargs()
    forget = tokenize_dataset(select_rows(plan.unlearn_data["forget"], plan.data_dir), tokenizer, **fmt)
    retain = tokenize_dataset(select_rows(plan.unlearn_data["retain"], plan.data_dir), tokenizer, **fmt)
    for eta in (0.3, 30.0):
        stepped = copy.deepcopy(model)
        spec = {**IAU, "learning_rate": eta, "report_to": "none", "save_strategy": "no"}
        config = build_method_config({"method": "IAU", **spec}, plan.unlearn, tmp_path / f"iau{eta}")
        IAUTrainer(stepped, config, forget_dataset=forget, retain_dataset=retain, processing_class=tokenizer).train()
        summary = evaluate_tofu(stepped, tokenizer, cheap, data_dir=plan.data_dir, show_progress=False)
        row = payload["eta"][f"{eta:g}"]
        for key in ("forget_Q_A_Prob", "retain_Q_A_Prob", "forget_truth_ratio"):
            assert row[key] == pytest.approx(summary[key], rel=1e-4), (eta, key)
    assert payload["eta"]["30"]["forget_Q_A_Prob"] != pytest.approx(payload["eta"]["0"]["forget_Q_A_Prob"], rel=1e-3)


def test_one_process_keeps_the_fine_tune_batch_per_step():
    raw = {"finetune": {"per_device_train_batch_size": 4}, "launch": {"num_processes": 2}}
    assert benchmark.one_process(raw) == {
        "finetune": {"per_device_train_batch_size": 8},
        "launch": {"num_processes": 1},
    }
    assert raw["finetune"]["per_device_train_batch_size"] == 4  # the caller's recipe is left as it was


def test_refuses_to_fine_tune_models_it_does_not_find(tmp_path):
    base = save_tiny_model(tmp_path / "base")
    recipe = tiny_recipe(base, tmp_path / "out", methods={"IAU": IAU})  # target and retain are fine-tuned ones
    with pytest.raises(SystemExit, match="No fine-tuned target model of this recipe .*: run hf-unlearn finetune"):
        benchmark.main(["--recipe", write(tmp_path / "r.yaml", recipe), "--work-dir", str(tmp_path)])
    assert not (tmp_path / "out" / "models" / "target").exists()
