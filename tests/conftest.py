import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel

# Tiny models run fastest on one thread, and the suite shares 2 cores with whatever else runs.
torch.set_num_threads(1)

VOCAB = 11  # 10 states + padding id 10, as in the Markov task
PAD = 10


def tiny_gpt2(seed: int = 0, **overrides) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    settings = {"vocab_size": VOCAB, "n_positions": 32, "n_layer": 2, "n_embd": 16, "n_head": 2}
    config = GPT2Config(**{**settings, **overrides}, pad_token_id=PAD, bos_token_id=PAD, eos_token_id=PAD)
    return GPT2LMHeadModel(config)


def lm_dataset(rows: list[list[int]], prompt_length: int = 0) -> Dataset:
    """Rows of token ids; the first `prompt_length` tokens are not targets."""
    labels = [[-100] * prompt_length + row[prompt_length:] for row in rows]
    return Dataset.from_dict({"input_ids": rows, "labels": labels})


@pytest.fixture
def model():
    return tiny_gpt2()


@pytest.fixture
def forget_dataset():
    generator = torch.Generator().manual_seed(1)
    rows = [torch.randint(0, 10, (int(n),), generator=generator).tolist() for n in (6, 8, 5, 7, 8, 6, 4, 8)]
    return lm_dataset(rows, prompt_length=2)


@pytest.fixture
def retain_dataset():
    generator = torch.Generator().manual_seed(2)
    rows = [torch.randint(0, 10, (8,), generator=generator).tolist() for _ in range(12)]
    return lm_dataset(rows, prompt_length=1)


@pytest.fixture
def no_loading(monkeypatch):
    """A dry run's guard: any model, tokenizer or dataset load fails the test, and the Hub is offline."""
    import datasets
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run must not load weights or data")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    monkeypatch.setattr(datasets, "load_dataset", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


REPO = Path(__file__).resolve().parent.parent


def run_two_processes(target: list[str], cwd: Path | None = None, timeout: int = 300) -> tuple[str, str]:
    """`torchrun --standalone --nproc_per_node 2 TARGET...` on the CPU (gloo), with this checkout importable and one
    thread per process; returns `(stdout, stderr)` and fails the test on a non-zero exit or after `timeout` s."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    env.pop("ACCELERATE_USE_CPU", None)  # the code under test must set it itself under a plain torchrun
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *target]
    # A session of its own, so that a hang (ranks waiting on each other) kills the launcher and its workers only.
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"torchrun did not finish within {timeout} s")
    assert process.returncode == 0, stderr[-4000:]
    return stdout, stderr
