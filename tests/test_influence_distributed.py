"""Multi-process LM-head influence: `torchrun --nproc_per_node 2` (gloo, CPU) returns, on every rank, the same
full score vector as one process (contiguous shards, all-reduced statistics, uneven and empty shards)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_unlearn.influence import lm_head_influence

from .test_influence import make_rows, tiny_gpt2

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "scripts" / "influence_worker.py"


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_match_one(tmp_path):
    model = tiny_gpt2(tied=True)
    model.save_pretrained(tmp_path / "model")
    datasets = {"uneven": make_rows(7, seed=11), "one_row": make_rows(1, seed=12)}  # shards 4+3, and 1+0
    torch.save(datasets, tmp_path / "rows.pt")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(tmp_path / "model"),
        str(tmp_path / "rows.pt"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]

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
