"""Two processes (torchrun, gloo) give the same TOFU summary as one: the reference can only evaluate in one."""

import json
from pathlib import Path

import pytest
import torch

from hf_unlearn.cli import main

from .conftest import run_two_processes
from .tofu_helpers import FIXTURE_DIR, make_model, make_tokenizer

COMPARED = [
    "forget_Q_A_Prob",
    "forget_Q_A_ROUGE",
    "forget_truth_ratio",
    "model_utility",
    "extraction_strength",
    "exact_memorization",
    "mia_min_k",
    "mia_loss",
    "mia_zlib",
    "privleak",
    "retain_Q_A_Prob",
    "ra_Q_A_Prob_normalised",
    "wf_Truth_Ratio",
]


def run_torchrun(args: list[str], cwd: Path, timeout: int = 240, capture_stderr: bool = False):
    """`torchrun --nproc_per_node 2 -m hf_unlearn.cli ARGS` on the CPU (gloo); returns stdout (and stderr)."""
    stdout, stderr = run_two_processes(["-m", "hf_unlearn.cli", *args], cwd=cwd, timeout=timeout)
    # accelerate joined the group (transformers' hint to use torch.distributed.launch means it did not), and the
    # other rank kept quiet (its C++ warnings carry a [rank1] prefix).
    assert "torch.distributed.launch" not in stderr and "[rank1]" not in stderr, stderr[-3000:]
    return (stdout, stderr) if capture_stderr else stdout


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_match_one(tmp_path):
    tokenizer = make_tokenizer()
    make_model(tokenizer).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    common = [
        "--model",
        str(tmp_path / "model"),
        "--data-dir",
        str(FIXTURE_DIR),
        "--batch-size",
        "2",
        "--max-new-tokens",
        "6",
        "--quiet",
    ]

    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun's OMP_NUM_THREADS=1 in the workers
    try:
        assert main(["eval", *common, "--output-dir", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(previous)

    stdout = run_torchrun(["eval", *common, "--output-dir", str(tmp_path / "two")], tmp_path)

    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert one["fingerprint"] == two["fingerprint"]
    for name in COMPARED:
        assert two[name] == pytest.approx(one[name], rel=1e-6, abs=1e-9), name
    items_one = json.loads((tmp_path / "one" / "items.json").read_text())["splits"]
    items_two = json.loads((tmp_path / "two" / "items.json").read_text())["splits"]
    assert [v["generation"] for v in items_one["forget"]] == [v["generation"] for v in items_two["forget"]]
    # Only rank 0 printed the table.
    assert stdout.count("forget_quality") == 1


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_pipeline_trains_data_parallel_on_cpu_and_shares_the_cache_with_one_process(tmp_path, capsys):
    """Under a plain torchrun on CPUs the trainers must run data-parallel (accelerate needs to be told to use the
    CPU), not train once per process on all the data; batch 2 x 2 processes then fingerprints like 4 x 1."""
    from .test_tofu_pipeline import tiny_recipe, write
    from .tofu_helpers import save_tiny_model

    base = save_tiny_model(tmp_path / "base")
    two = tiny_recipe(base, tmp_path / "out", methods={"GA": {}}, launch={"num_processes": 2})
    two["finetune"]["per_device_train_batch_size"] = 2  # x 2 processes = the single-process tiny recipe's 4
    two["unlearn"]["per_device_train_batch_size"] = 1
    run_torchrun(["run", write(tmp_path / "two.yaml", two)], tmp_path)

    target = json.loads((tmp_path / "out" / "models" / "target" / "hf_unlearn_stage.json").read_text())
    assert target["steps"] == 6  # 10 rows in batches of 2 x 2 = 3 steps per epoch, 2 epochs (one process: 10)
    ga_log = json.loads((tmp_path / "out" / "methods" / "GA" / "model" / "train_log.json").read_text())
    assert ga_log[-1]["epoch"] == pytest.approx(2 / 3)  # 2 steps of 2 x 1 rows out of 3 per epoch (one process: 0.4)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["complete"] is True and results["environment"]["device"] == "cpu"

    one = tiny_recipe(base, tmp_path / "out", methods={"GA": {}})  # 4 x 1 and 2 x 1 rows per step: the same runs
    assert main(["run", write(tmp_path / "one.yaml", one)]) == 0
    logged = capsys.readouterr().out
    assert logged.count("Reusing the cached") == 6  # target, retain and the GA model, and their evaluations
    assert logged.count("Reusing the cached TOFU evaluation") == 3
