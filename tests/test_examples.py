"""Every script in examples/ runs, offline, on a tiny model with tiny settings (as a user would run it)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .tofu_helpers import FIXTURE_DIR, save_tiny_model

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TINY = ["--per_device_train_batch_size", "4", "--disable_tqdm", "true", "--report_to", "none"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def run_example(name: str, *argv: str, tmp_path: Path) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *argv], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_every_example_has_a_test():
    tested = {
        "npo_lora_qa.py",
        "imu_own_model.py",
        "eval_callback_best_checkpoint.py",
        "push_adapter.py",
    }  # the last in test_hub.py
    assert {path.name for path in EXAMPLES.glob("*.py")} <= tested


def test_npo_lora_on_your_own_qa_data(tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "npo-lora"
    stdout = run_example(
        "npo_lora_qa.py",
        "--model_name_or_path", str(tiny_model), "--output_dir", str(out), "--max_steps", "3",
        "--learning_rate", "5e-3", *TINY,
        tmp_path=tmp_path,
    )  # fmt: skip
    forget = [line for line in stdout.splitlines() if line.startswith("eval_forget_loss")]
    before, after = (float(v) for v in forget[0].split(": ")[1].split(" -> "))
    assert after > before  # it forgot
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out)
    assert any("lora_" in name for name, _ in model.named_parameters())


def test_imu_on_your_own_model(tiny_model, tmp_path):
    out = tmp_path / "imu"
    stdout = run_example(
        "imu_own_model.py",
        "--model_name_or_path", str(tiny_model), "--output_dir", str(out), "--max_steps", "2",
        *TINY,
        tmp_path=tmp_path,
    )  # fmt: skip
    assert "IMU kept" in stdout and "eval_forget_loss" in stdout
    before, after = load_file(str(tiny_model / "model.safetensors")), load_file(str(out / "model.safetensors"))
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"lm_head.weight"}  # the head only
    assert (out / "influence_scores.safetensors").is_file()


def test_eval_callback_keeps_the_best_checkpoint(tiny_model, tmp_path):
    out = tmp_path / "npo-tofu"
    stdout = run_example(
        "eval_callback_best_checkpoint.py",
        "--model_name_or_path", str(tiny_model), "--tofu_dir", str(FIXTURE_DIR), "--output_dir", str(out),
        "--max_steps", "4", "--eval_steps", "2", "--save_steps", "2", "--learning_rate", "1e-2",
        "--max_eval_items", "3", "--per_device_train_batch_size", "5", "--disable_tqdm", "true",
        # The random tiny model starts with its forget answers unlikely: targets it cannot meet, so both evaluations run.
        "--target", "forget_Q_A_Prob < -1", "--collapse", "eval_retain_loss > 1e9",
        tmp_path=tmp_path,
    )  # fmt: skip
    steps = [line for line in stdout.splitlines() if line.startswith("step ")]
    assert len(steps) == 2 and "forget prob" in steps[0]
    scores = {int(line.split(":")[0].split()[1]): float(line.rsplit("score ", 1)[1]) for line in steps}
    best = max(scores, key=lambda step: (scores[step], -step))
    assert f"checkpoint-{best}, now loaded" in stdout
    assert (out / "model.safetensors").is_file()


def test_the_readme_first_example_runs(tiny_model, tmp_path):
    """The README's first Python block, as written, with the tiny model in place of the Hub id."""
    readme = (ROOT / "README.md").read_text()
    snippet = readme.split("```python\n", 1)[1].split("```", 1)[0]
    hub_id = 'model_id = "HuggingFaceTB/SmolLM2-135M-Instruct"'
    assert hub_id in snippet
    script = tmp_path / "first_example.py"
    script.write_text(snippet.replace(hub_id, f"model_id = {str(tiny_model)!r}"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'eval_forget_loss'" in done.stdout and "'eval_retain_loss'" in done.stdout
    assert (tmp_path / "npo" / "model.safetensors").is_file()
