"""`hf_unlearn.tasks.tofu.matched_forgetting` (benchmarks/imu_matched_forgetting_tofu.py) end to end on the tiny
TOFU fixture: trajectories, matched table, plot."""

import json

import pytest

from hf_unlearn.evaluation import value_at_level
from hf_unlearn.tasks.tofu import matched_forgetting as benchmark

from .test_tofu_pipeline import tiny_recipe, write
from .tofu_helpers import save_tiny_model


def test_grid_gives_each_parameter_set_its_learning_rates():
    runs = benchmark.grid(["GA", "IMU-head"], None)
    assert {label: spec["learning_rate"] for label, spec in runs.items()} == {
        **{f"GA@{lr:g}": lr for lr in benchmark.LEARNING_RATES["all"]},
        **{f"IMU-head@{lr:g}": lr for lr in benchmark.LEARNING_RATES["head"]},
    }
    assert all(spec["method"] in ("GA", "IMU") for spec in runs.values())


def test_benchmark_runs_trajectories_and_reads_them_at_matched_forgetting(tmp_path):
    base = save_tiny_model(tmp_path / "base")
    recipe = tiny_recipe(
        base,
        tmp_path / "unused",
        models={"target": {"name_or_path": str(base)}, "retain": {"name_or_path": str(base)}},
        unlearn={"max_steps": 2, "per_device_train_batch_size": 2, "disable_tqdm": True},
    )
    recipe.pop("finetune")
    out, result, figure = tmp_path / "out", tmp_path / "result.json", tmp_path / "plot.png"
    argv = ["--recipe", write(tmp_path / "r.yaml", recipe), "--methods", "GA", "IMU-head"]
    argv += ["--learning-rates", "1e-3", "3e-2", "--eval-steps", "1", "--max-forget-items", "3"]
    argv += ["--max-utility-items", "2", "--output-dir", str(out), "--json", str(result), "--plot", str(figure)]
    benchmark.main(argv)

    payload = json.loads(result.read_text())
    assert set(payload["runs"]) == {"GA@0.001", "GA@0.03", "IMU-head@0.001", "IMU-head@0.03"}
    assert figure.stat().st_size > 1000
    for history in payload["histories"].values():
        assert [h["step"] for h in history] == [0, 1, 2]
    # The matched table is the best (highest utility) of the two learning rates at each level it reached.
    for method in ("GA", "IMU-head"):
        for level, cell in payload["matched"][method]["at_forget_prob"].items():
            values = [
                value_at_level(
                    payload["histories"][f"{method}@{lr}"],
                    "forget_Q_A_Prob",
                    benchmark.UTILITY,
                    float(level),
                    falling=True,
                )
                for lr in ("0.001", "0.03")
            ]
            reached = [v for v in values if v is not None]
            assert (cell is None) == (not reached)
            if cell is not None:
                assert cell[benchmark.UTILITY] == pytest.approx(max(reached))
        end = payload["matched"][method]["end_points"]["0.03"]
        assert end["unlearn_steps"] == 2 and end["model_utility"] is not None  # the final suite generates
    ga = payload["histories"]["GA@0.03"]
    assert ga[-1]["forget_Q_A_Prob"] < ga[0]["forget_Q_A_Prob"]  # gradient ascent at a high lr forgets
