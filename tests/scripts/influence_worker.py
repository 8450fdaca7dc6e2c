"""Launched by tests/test_influence_distributed.py under `torchrun --nproc_per_node 2` (gloo, CPU).

Every rank computes LM-head influence on the same rows and saves what it returned, so the test can check that
all ranks hold the full vector and that it matches a single process. Then the same with the model sharded by FSDP2
(`fully_shard` on a CPU mesh: every parameter, the LM head included, is a DTensor holding half the rows), once with
the plain linear head and once with the head behind a wrapper (read by probing), so the head has to be gathered.

Usage: influence_worker.py MODEL_DIR ROWS_FILE OUT_DIR
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch import nn
from transformers import AutoModelForCausalLM

from hf_unlearn.influence import lm_head_influence
from hf_unlearn.influence.task import is_sharded


class WrappedHead(nn.Module):
    """A head that is not an `nn.Linear` (as PEFT's wrappers are not): the engine reads it by probing."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear
        self.in_features = linear.in_features

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden)


def fsdp2_model(model_dir: str, wrap_head: bool) -> nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64).eval()
    if wrap_head:
        model.lm_head = WrappedHead(model.lm_head)  # still tied to the input embeddings (the same Parameter)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


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

    for variant in ("linear", "wrapped"):
        sharded = fsdp2_model(model_dir, wrap_head=variant == "wrapped")
        head = sharded.get_output_embeddings()
        local_rows = int(next(p for n, p in sharded.named_parameters() if n.endswith("wte.weight")).to_local().shape[0])
        for name, rows in datasets.items():
            for cache_features in (True, False):  # without the cache, pass 2 runs its own (filler) forwards
                sharded.reshard()  # the root keeps its parameters gathered after a forward: shard them again
                head_sharded = is_sharded(head)
                scores = lm_head_influence(
                    sharded, rows, curvature="kfac", batch_size=2, cache_features=cache_features, progress_bar=False
                )
                torch.save(
                    {"scores": scores, "sharded": head_sharded, "local_rows": local_rows},
                    f"{out_dir}/fsdp2_{variant}_{name}_{cache_features}_rank{rank}.pt",
                )
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
