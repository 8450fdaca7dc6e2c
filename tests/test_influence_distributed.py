"""Multi-process LM-head influence: `torchrun --nproc_per_node 2` (gloo, CPU) returns, on every rank, the same
full score vector as one process (contiguous shards, all-reduced statistics, uneven and empty shards)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from hf_unlearn.influence import lm_head_influence

from .conftest import run_two_processes
from .test_influence import make_rows, tiny_gpt2

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "scripts" / "influence_worker.py"


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_match_one(tmp_path):
    model = tiny_gpt2(tied=True)
    model.save_pretrained(tmp_path / "model")
    datasets = {"uneven": make_rows(7, seed=11), "one_row": make_rows(1, seed=12)}  # shards 4+3, and 1+0
    torch.save(datasets, tmp_path / "rows.pt")
    run_two_processes([str(WORKER), str(tmp_path / "model"), str(tmp_path / "rows.pt"), str(tmp_path)])

    shard_rows = {"uneven": [4, 3], "one_row": [1, 0]}
    for name, rows in datasets.items():
        for curvature in ("fisher_diag", "exact", "kfac"):
            single = lm_head_influence(model, rows, curvature=curvature, batch_size=3, progress_bar=False)
            saved = [torch.load(tmp_path / f"{name}_{curvature}_rank{r}.pt") for r in (0, 1)]
            assert [s["rows_seen"] for s in saved] == shard_rows[name]  # each rank ran only its shard
            ranks = [s["scores"] for s in saved]
            assert torch.equal(ranks[0], ranks[1]), (name, curvature)  # identical on every rank
            scale = float(single.abs().max())
            assert float((ranks[0] - single).abs().max()) <= 1e-9 * scale, (name, curvature, ranks[0], single)

    # FSDP2: the head is sharded (each rank holds half of its rows), gathered for the pass; ranks with fewer batches
    # (shards 4+3 in batches of 2, and 1+0) run filler forwards, or the sharded model's all-gathers would hang.
    for variant in ("linear", "wrapped"):
        for name, rows in datasets.items():
            single = lm_head_influence(model, rows, curvature="kfac", batch_size=3, progress_bar=False)
            for cache_features in (True, False):
                saved = [torch.load(tmp_path / f"fsdp2_{variant}_{name}_{cache_features}_rank{r}.pt") for r in (0, 1)]
                assert all(s["sharded"] for s in saved) and [s["local_rows"] for s in saved] == [6, 5]
                assert torch.equal(saved[0]["scores"], saved[1]["scores"]), (variant, name, cache_features)
                scale = float(single.abs().max())
                error = float((saved[0]["scores"] - single).abs().max())
                assert error <= 1e-9 * scale, (variant, name, cache_features, error)


def _fake_zero3(model: torch.nn.Module, gathered: list[int]) -> types.ModuleType:
    """Partition `model` as DeepSpeed ZeRO-3 does (every parameter empty on this process, `ds_id` set, gathered for
    each module's own forward by hooks) and return a stand-in `deepspeed` module whose `zero.GatheredParameters`
    fills the parameters it is given for the length of the `with` block (counting them in `gathered`)."""
    for index, parameter in enumerate(model.parameters()):
        parameter.ds_id, parameter.ds_full = index, parameter.data.clone()
        parameter.data = torch.empty(0, dtype=parameter.dtype)

    def fill(params):
        for parameter in params:
            parameter.data = parameter.ds_full

    def release(params):
        for parameter in params:
            parameter.data = torch.empty(0, dtype=parameter.dtype)

    class GatheredParameters:
        def __init__(self, params, modifier_rank=None):
            self.params = list(params)

        def __enter__(self):
            gathered.append(len(self.params))
            fill(self.params)

        def __exit__(self, *exc):
            release(self.params)

    for module in model.modules():  # what DeepSpeed's own hooks do around every module's forward
        own = list(module.parameters(recurse=False))
        if own:
            module.register_forward_pre_hook(lambda m, args, own=own: fill(own))
            module.register_forward_hook(lambda m, args, out, own=own: release(own))
    return types.SimpleNamespace(zero=types.SimpleNamespace(GatheredParameters=GatheredParameters))


def test_a_zero3_partitioned_head_is_gathered(monkeypatch):
    """DeepSpeed ZeRO-3 leaves every parameter empty between forwards: the head is read inside
    `deepspeed.zero.GatheredParameters` and copied out, and the scores equal those of the whole model."""
    rows = make_rows(5, seed=3)
    expected = lm_head_influence(tiny_gpt2(tied=True), rows, curvature="kfac", batch_size=2, progress_bar=False)
    partitioned, gathered = tiny_gpt2(tied=True), []
    monkeypatch.setitem(sys.modules, "deepspeed", _fake_zero3(partitioned, gathered))
    scores = lm_head_influence(partitioned, rows, curvature="kfac", batch_size=2, progress_bar=False)
    assert torch.allclose(scores, expected, rtol=1e-5, atol=1e-9)
    assert gathered == [1]  # the head's one (tied) weight, gathered once
    assert partitioned.lm_head.weight.numel() == 0  # released again after the pass
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # not installed: a clear refusal, not wrong scores
    with pytest.raises(ValueError, match="sharded .empty on this process. and cannot be gathered"):
        lm_head_influence(partitioned, rows, progress_bar=False)
