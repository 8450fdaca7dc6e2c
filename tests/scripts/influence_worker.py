"""Launched by tests/test_influence_distributed.py under `torchrun --nproc_per_node 2` (gloo, CPU).

Every rank computes LM-head influence on the same rows and saves what it returned, so the test can check that
all ranks hold the full vector and that it matches a single process.

Usage: influence_worker.py MODEL_DIR ROWS_FILE OUT_DIR
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM

from hf_unlearn.influence import lm_head_influence


def main(model_dir: str, rows_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64).eval()
    seen = [0]  # rows this rank ran through the model: proves the dataset was sharded

    def count_rows(module, args, kwargs):
        seen[0] += kwargs["input_ids"].shape[0]

    model.register_forward_pre_hook(count_rows, with_kwargs=True)
    datasets = torch.load(rows_file)  # {name: list of rows}
    for name, rows in datasets.items():
        for curvature in ("fisher_diag", "exact", "kfac"):
            seen[0] = 0
            scores = lm_head_influence(model, rows, curvature=curvature, batch_size=2, progress_bar=False)
            torch.save({"scores": scores, "rows_seen": seen[0]}, f"{out_dir}/{name}_{curvature}_rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
