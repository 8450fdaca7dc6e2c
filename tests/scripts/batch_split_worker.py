"""One optimizer step of every method on the same 8 forget rows (lengths 4-25), split in different ways.

Imported by tests/test_batch_split.py for the one-process splits, and launched by it under
`torchrun --nproc_per_node 2` as a plain user script (no hf-unlearn CLI: the config alone must make the run
data-parallel on CPUs) for 2 processes x 4 rows. Rank 0 writes each run's weight change to OUT_DIR/<case>.safetensors.

Usage: batch_split_worker.py OUT_DIR PER_DEVICE_BATCH GRADIENT_ACCUMULATION
"""

from __future__ import annotations

import copy
import gc
import sys
from pathlib import Path

import torch
from datasets import Dataset
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

from hf_unlearn.trainers import METHODS

VOCAB, PAD = 11, 10
LENGTHS = (4, 25, 9, 17, 6, 21, 12, 5)
IDK = [3, 1, 4, 1, 5]  # the idk answer's token ids (the rows have no text)
# (case, method, config overrides): every method without and with a retain set (IAU always has one).
CASES = [
    ("GA", "GA", {}),
    ("GA+nll", "GA", {"retain_loss": "nll"}),
    ("GradDiff", "GradDiff", {"retain_loss_weight": 0.5}),
    ("GradDiff+kl", "GradDiff", {"retain_loss": "kl"}),
    ("NPO", "NPO", {"retain_loss": "none"}),
    ("NPO+nll", "NPO", {"retain_loss": "nll"}),
    ("SimNPO", "SimNPO", {"retain_loss": "none", "beta": 0.5}),
    ("SimNPO+nll", "SimNPO", {"retain_loss": "nll", "beta": 0.5}),
    ("IMU", "IMU", {"trainable": "all", "influence_weighting": {"update_epochs": 1}}),
    ("IMU+nll", "IMU", {"trainable": "all", "retain_loss": "nll", "influence_weighting": {"update_epochs": 1}}),
    ("IAU", "IAU", {}),
    ("MU-Mis", "MU-Mis", {"positions_per_sequence": 3}),
    ("MU-Mis+nll", "MU-Mis", {"retain_loss": "nll"}),
    ("IdkNLL", "IdkNLL", {"retain_loss": "none", "idk_token_ids": IDK}),
    ("IdkNLL+nll", "IdkNLL", {"idk_token_ids": IDK}),
    ("IdkDPO", "IdkDPO", {"retain_loss": "none", "idk_token_ids": IDK, "beta": 0.5}),
    ("IdkDPO+nll", "IdkDPO", {"idk_token_ids": IDK, "beta": 0.5}),
    ("RMU", "RMU", {"retain_loss": "none", "layer": 1}),
    ("RMU+activations", "RMU", {"layer": 0, "retain_loss_weight": 3.0}),
    ("UNDIAL", "UNDIAL", {"beta": 3.0}),
    ("UNDIAL+nll", "UNDIAL", {"beta": 3.0, "retain_loss": "nll"}),
    ("WGA", "WGA", {"retain_loss": "none"}),
    ("WGA+nll", "WGA", {}),
    ("SatImp", "SatImp", {"retain_loss": "none", "beta1": 1.0, "forget_loss_weight": 1.0}),
    ("SatImp+nll", "SatImp", {"beta1": 1.0}),
    ("CE-U", "CE-U", {}),
    ("CE-U+nll", "CE-U", {"retain_loss": "nll"}),
    ("ME", "ME+GD", {"retain_loss": "none", "forget_loss_weight": 1.0}),
    ("ME+GD", "ME+GD", {}),
    ("PDU", "PDU", {"retain_loss_bound": 1.0, "retain_loss_weight": 2.0, "dual_warmup_epochs": 0}),
]


def rows(seed: int, lengths: tuple[int, ...], prompt: int) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    ids = [torch.randint(0, 10, (n,), generator=generator).tolist() for n in lengths]
    return Dataset.from_dict({"input_ids": ids, "labels": [[-100] * prompt + r[prompt:] for r in ids]})


def model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=32, n_layer=2, n_embd=16, n_head=2, pad_token_id=PAD, eos_token_id=PAD,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def one_step(case: str, out_dir: str, per_device: int, accumulation: int) -> dict[str, torch.Tensor]:
    """θ₁ − θ₀ after one plain-SGD step (no clipping, no decay, so the step is the gradient itself)."""
    _, method, overrides = next(entry for entry in CASES if entry[0] == case)
    config_class, trainer_class = METHODS[method]
    start = model()
    initial = copy.deepcopy(start.state_dict())
    settings = {
        "output_dir": str(Path(out_dir) / case), "max_steps": 1, "learning_rate": 0.1, "optim": "sgd",
        "lr_scheduler_type": "constant", "weight_decay": 0.0, "max_grad_norm": 0.0, "seed": 3,
        "per_device_train_batch_size": per_device, "report_to": "none", "disable_tqdm": True, "save_strategy": "no",
    }  # fmt: skip
    if method != "IAU":  # IAU's step is always one full pass: it sets its own accumulation
        settings["gradient_accumulation_steps"] = accumulation
    args = config_class(**{**settings, **overrides})
    retain = rows(2, (8, 14, 5, 11, 20, 7, 9, 16), 1)
    trainer_class(start, args, forget_dataset=rows(1, LENGTHS, 2), retain_dataset=retain).train()
    return {name: (value - initial[name]).contiguous() for name, value in start.state_dict().items()}


def main() -> None:
    out_dir, per_device, accumulation = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    import torch.distributed as dist

    for case, _, _ in CASES:
        delta = one_step(case, out_dir, per_device, accumulation)
        # The trainer (and its DDP wrapper) is held in reference cycles: free it now, on both ranks together, rather
        # than whenever the garbage collector runs, perhaps in the middle of the next case's collectives.
        gc.collect()
        dist.barrier()
        if not dist.is_initialized() or dist.get_world_size() != 2:
            raise SystemExit("expected a 2-process group: UnlearnConfig did not join the torchrun launch")
        if dist.get_rank() == 0:
            save_file(
                {k: v for k, v in delta.items() if "attn.bias" not in k}, str(Path(out_dir) / f"{case}.safetensors")
            )
    # Both ranks finish writing before either exits, and the process group is torn down explicitly (one run under
    # load ended with rank 1 aborting, "terminate called without an active exception", and rank 0 killed).
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
