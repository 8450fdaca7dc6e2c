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
