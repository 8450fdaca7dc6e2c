"""Multi-process use: the shipped accelerate config files (read by accelerate itself), the process-count and batch
flags, the refusal of a launch with another process count (naming the flags that keep the effective batch), the
refusal of an `accelerate launch` that started one process of several, and the Markov pipeline data-parallel on
2 gloo processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from hf_unlearn.cli import main
from hf_unlearn.recipe import accelerate_configs, embedded_recipes, load_recipe
from hf_unlearn.runtime import launch
from hf_unlearn.runtime.launch import (
    LaunchError,
    TrainingBatch,
    check_accelerate_launch,
    keep_effective_batch,
    process_count_error,
)

from .test_cli import TINY
from .test_tofu_distributed import run_torchrun

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("single_gpu", "ddp", "fsdp2", "deepspeed_zero2", "deepspeed_zero3")


def write(path: Path, recipe: dict) -> str:
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


# ------------------------------------------------------------------------------------------------ config files


@pytest.mark.parametrize("name", CONFIGS)
def test_accelerate_configs_are_read_by_accelerate(name, monkeypatch):
    """Each file goes through accelerate's own loader and launcher preparation, and the plugin accelerate builds from
    the launcher's environment is the one documented: precision and accumulation left to the recipe."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import (
        prepare_deepspeed_cmd_env,
        prepare_multi_gpu_env,
        prepare_simple_launcher_cmd_env,
    )

    path = accelerate_configs()[name]
    header = path.read_text()
    assert f"accelerate launch --config_file recipes/accelerate/{name}.yaml" in header
    assert "-m hf_unlearn.cli run RECIPE" in header
    config = load_config_from_file(str(path))
    assert config.mixed_precision == "no"  # the recipe's bf16 decides, not the launcher
    expected = {
        "single_gpu": "NO",
        "ddp": "MULTI_GPU",
        "fsdp2": "FSDP",
        "deepspeed_zero2": "DEEPSPEED",
        "deepspeed_zero3": "DEEPSPEED",
    }
    assert config.distributed_type.value == expected[name]
    assert config.num_processes == (1 if name == "single_gpu" else 2)

    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "hf_unlearn.cli", "run", "markov"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        env = prepare_deepspeed_cmd_env(args)[1]
    elif args.use_fsdp or args.multi_gpu:
        env = prepare_multi_gpu_env(args)
    else:
        env = prepare_simple_launcher_cmd_env(args)[1]
    assert args.multi_gpu == (name == "ddp") and args.num_processes == config.num_processes
    for key, value in env.items():
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(key, value)
    if name == "fsdp2":
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
        assert plugin.cpu_ram_efficient_loading is False  # every process loads real weights (NPO/IMU passes)
        assert plugin.state_dict_type.name == "FULL_STATE_DICT"
    elif name.startswith("deepspeed"):
        plugin = DeepSpeedPlugin()
        ds = plugin.deepspeed_config
        assert ds["zero_optimization"]["stage"] == int(name[-1]) and plugin.zero3_init_flag is False
        assert ds["gradient_accumulation_steps"] == "auto" and ds["gradient_clipping"] == "auto"  # from the recipe
    else:
        assert env.get("ACCELERATE_USE_DEEPSPEED") is None and env.get("ACCELERATE_USE_FSDP") is None


def test_accelerate_configs_are_not_recipes(tmp_path, capsys):
    assert set(accelerate_configs()) == set(CONFIGS)
    assert not [name for name in embedded_recipes() if name.startswith("accelerate")]
    with pytest.raises(FileNotFoundError, match="is an accelerate config file, not a recipe"):
        load_recipe("accelerate/ddp")
    assert main(["run", str(accelerate_configs()["fsdp2"])]) == 2  # given as a path
    assert "is an accelerate config file, not a recipe" in capsys.readouterr().err


def test_the_wheel_ships_the_accelerate_configs(tmp_path):
    """Built from this checkout's pyproject (package-data), the wheel holds the configs, and the recipe listing of
    the installed layout leaves them out."""
    build_meta = pytest.importorskip("setuptools.build_meta")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in ("hf_unlearn", "recipes"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.sha256"))
    cwd = os.getcwd()
    os.chdir(source)
    try:
        wheel = source / "dist" / build_meta.build_wheel(str(source / "dist"))
    finally:
        os.chdir(cwd)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "installed")
    assert {f"hf_unlearn/recipes/accelerate/{name}.yaml" for name in CONFIGS} <= names
    from hf_unlearn.recipe import _recipe_names

    installed = _recipe_names(tmp_path / "installed" / "hf_unlearn" / "recipes", "")
    assert "markov" in installed and "tofu/forget05_smollm2" in installed
    assert not [name for name in installed if name.startswith("accelerate")]


# ------------------------------------------------------------------------------------------------ batch and processes


def test_keep_effective_batch_against_brute_force():
    for per_device in range(1, 9):
        for accumulation in range(1, 5):
            for wanted in range(1, 5):
                for launched in range(1, 5):
                    total = per_device * accumulation * wanted
                    kept = keep_effective_batch(per_device, accumulation, wanted, launched)
                    options = [
                        (b, total // (launched * b)) for b in range(1, per_device + 1) if total % (launched * b) == 0
                    ]
                    # the largest per-process batch no larger than the recipe's (it fits in memory)
                    assert kept == (max(options) if options else None), (per_device, accumulation, wanted, launched)
    assert keep_effective_batch(8, 4, 1, 2) == (8, 2)
    assert keep_effective_batch(4, 1, 2, 4) == (2, 1)
    assert keep_effective_batch(8, 1, 1, 3) is None


def test_the_refusal_names_the_flags_that_keep_the_effective_batch():
    batches = [
        TrainingBatch("finetune", 4, 1),
        TrainingBatch("unlearn", 8, 4, flags=True),
        TrainingBatch("methods.IMU", 16, 4),
    ]
    message = str(process_count_error(1, 2, batches, "run tofu/x"))
    assert message == (
        "2 process(es) were launched but the recipe's batch sizes are per process for launch.num_processes = 1: to "
        "keep the effective batch (finetune 4, unlearn 32, methods.IMU 64) on 2 processes add `--num-processes 2 "
        "--gradient-accumulation-steps 2 --set finetune.per_device_train_batch_size=2 "
        "--set methods.IMU.gradient_accumulation_steps=2`, or run `hf-unlearn run tofu/x` in one process."
    )
    message = str(process_count_error(2, 3, [TrainingBatch("unlearn", 4, 1, flags=True)], "run markov"))
    assert "the effective batch of unlearn does not split evenly over 3 processes" in message
    assert "`torchrun --nproc_per_node 2 -m hf_unlearn.cli run markov`" in message


def test_batch_flags_set_the_recipe(tmp_path, capsys):
    recipe = write(tmp_path / "tiny.yaml", TINY)
    flags = ["--per-device-train-batch-size", "3", "--gradient-accumulation-steps", "2", "--num-processes", "2"]
    assert main(["run", recipe, "--dry-run", *flags]) == 0
    printed = capsys.readouterr().out
    assert "Launch: 2 process(es)" in printed
    assert printed.count("batch 3, ") == 3  # GA, NPO, GradDiff: the shared unlearn section
    with pytest.raises(SystemExit):  # argparse's usage error
        main(["run", recipe, "--dry-run", "--num-processes", "0"])
    assert "--num-processes: must be >= 1, got 0" in capsys.readouterr().err

    from .test_tofu_pipeline import tiny_recipe
    from .tofu_helpers import save_tiny_model

    tofu = write(tmp_path / "tofu.yaml", tiny_recipe(save_tiny_model(tmp_path / "base"), tmp_path / "out"))
    assert main(["run", tofu, "--dry-run", *flags]) == 0
    printed = capsys.readouterr().out
    assert printed.count("batch 3 x 2 accumulation x 2 process(es) = 12") == 2  # GA, IMU
    assert "batch 4 x 1 accumulation x 2 process(es) = 8" in printed  # the fine-tune keeps its own
    # The plan's launch commands carry the flags, so that the launch it shows is not refused.
    assert f"torchrun --nproc_per_node 2 -m hf_unlearn.cli run {tofu} {' '.join(flags)}" in printed
    assert main(["finetune", tofu, "--dry-run", *flags]) == 0
    assert "batch 3 x 2 accumulation x 2 process(es) = 12" in capsys.readouterr().out  # finetune: its section


def test_a_markov_launch_with_another_process_count_is_refused_before_training(tmp_path, capsys, monkeypatch):
    from hf_unlearn.runtime import distributed
    from hf_unlearn.tasks.markov import pipeline

    monkeypatch.setattr(distributed, "num_processes", lambda: 2)
    recipe = write(tmp_path / "tiny.yaml", TINY)
    assert main(["run", recipe, "--output-dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    suggested = re.search(r"add `([^`]*)`", error).group(1)
    assert suggested == "--num-processes 2 --per-device-train-batch-size 2 --set train.per_device_train_batch_size=8"
    assert not (tmp_path / "out").exists()

    class Started(Exception):
        pass

    def started(*args, **kwargs):
        raise Started

    monkeypatch.setattr(pipeline, "make_markov_datasets", started)  # the first step after the check
    with pytest.raises(Started):
        main(["run", recipe, "--output-dir", str(tmp_path / "out"), *suggested.split()])


# ------------------------------------------------------------------------------------------------ accelerate launch


def test_an_accelerate_launch_that_started_one_of_several_processes_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "False")  # what accelerate's one-process launcher sets
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    accelerate = ["/venv/bin/python3", "/venv/bin/accelerate", "launch"]
    command = ["-m", "hf_unlearn.cli", "run", "markov"]
    with pytest.raises(LaunchError) as error:
        check_accelerate_launch(["run", "markov"], [*accelerate, "--num_processes", "2", *command])
    assert str(error.value) == (
        "accelerate launch was asked for 2 processes but started one (it starts several only with several GPUs or "
        "--multi_gpu): on CPUs run `torchrun --nproc_per_node 2 -m hf_unlearn.cli run markov`."
    )
    ddp = str(accelerate_configs()["ddp"])  # num_processes: 2 in the file
    assert launch.requested_accelerate_processes([*accelerate, "--config_file", ddp, *command]) == 2
    assert launch.requested_accelerate_processes([*accelerate, "--cpu", "--num-processes=3", *command]) == 3
    assert launch.requested_accelerate_processes(["/venv/bin/torchrun", "--nproc_per_node", "2"]) is None
    check_accelerate_launch(["run"], [*accelerate, "--num_processes", "1", *command])  # one asked, one started
    monkeypatch.setenv("WORLD_SIZE", "2")  # --multi_gpu started both: nothing to refuse
    check_accelerate_launch(["run"], [*accelerate, "--num_processes", "2", *command])
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # fsdp2.yaml on CPUs: accelerate would run plain DDP
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LaunchError, match="with FSDP on a machine without GPUs would train with plain DDP"):
        check_accelerate_launch(["run", "markov"], [*accelerate, "--config_file", "fsdp2.yaml", *command])
    monkeypatch.delenv("ACCELERATE_USE_FSDP")

    # The real thing: accelerate launch on this machine (no GPU) starts one process, which refuses at once.
    monkeypatch.delenv("WORLD_SIZE")
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    accelerate_cli = Path(sys.executable).with_name("accelerate")
    if not accelerate_cli.exists():
        pytest.skip("the accelerate command is not installed beside this Python")
    recipe = write(tmp_path / "tiny.yaml", TINY)
    done = subprocess.run(
        [str(accelerate_cli), "launch", "--num_processes", "2", "-m", "hf_unlearn.cli", "run", recipe, "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert f"torchrun --nproc_per_node 2 -m hf_unlearn.cli run {recipe} --dry-run" in done.stderr
    ours = [line for line in done.stderr.splitlines() if line.startswith("hf-unlearn run: error: accelerate launch")]
    assert len(ours) == 1  # (accelerate repeats the last line of its child's stderr in its own error)


# ------------------------------------------------------------------------------------------------ Markov, 2 processes


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_markov_runs_data_parallel_on_two_processes_and_shares_the_cache(tmp_path, capsys):
    """`torchrun --nproc_per_node 2` on the Markov pipeline: data-parallel training (half the rows per process),
    one log and one set of files, results shaped as a one-process run's, and models reused by a one-process run
    with the same batch per step."""
    recipe = {**TINY, "methods": {"GA": {}, "IMU": {"trainable": "head", "influence_weighting": {"psi": "sqrt"}}}}
    path = write(tmp_path / "tiny.yaml", recipe)
    two, one = tmp_path / "two", tmp_path / "one"
    # TINY trains with batches of 16 and unlearns with 4: 8 and 2 per process keep both.
    flags = [
        "--num-processes",
        "2",
        "--per-device-train-batch-size",
        "2",
        "--set",
        "train.per_device_train_batch_size=8",
    ]
    stdout, stderr = run_torchrun(["run", path, "--output-dir", str(two), *flags], tmp_path, capture_stderr=True)
    for line in ("Training the original model", "Unlearning with GA", "Unlearning with IMU", "| Original", "Wrote "):
        assert stdout.count(line) == 1, line  # the main process logs, once
    assert "[rank1]" not in stderr and "torch.distributed.launch" not in stderr
    results = json.loads((two / "results.json").read_text())
    assert results["complete"] and results["environment"]["processes"] == 2
    original = json.loads((two / "models" / "original" / "hf_unlearn_stage.json").read_text())
    assert original["steps"] == 5  # 72 sequences in steps of 8 x 2 processes (one process: 16 x 1, also 5 steps)
    for method in results["methods"].values():
        assert [entry["step"] for entry in method["history"]] == [0, 1, 2, 3]
        assert method["forget_loss"] > results["original"]["forget_loss"]
    assert not list((two / "models").glob(".*.partial"))

    assert (
        main(
            [
                "run",
                write(tmp_path / "one.yaml", {**recipe, "models_dir": str(two / "models")}),
                "--output-dir",
                str(one),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.count("Reusing the cached") == 2  # 16 x 1 per step fingerprints like 8 x 2
    single = json.loads((one / "results.json").read_text())
    assert all(entry.get("cached") for entry in single["training"].values())  # the one-process run reused both
    for run in (single, results):  # beyond that flag, the two runs have the same structure
        for entry in run["training"].values():
            entry.pop("cached", None)
    assert _shape(single) == _shape(results)
    assert single["original"] == results["original"] and single["retrained"] == results["retrained"]


def _shape(value):
    """Keys (recursively) and list lengths: the structure of a results file, not its numbers."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items() if key not in ("seconds",)}
    if isinstance(value, list):
        return [_shape(item) for item in value]
    return type(value).__name__ if not isinstance(value, (int, float)) or isinstance(value, bool) else "number"
