"""One optimizer step gives the same update however it is split: 8×1, 4×2 and 2×4 micro-batch × accumulation, and
2 processes × 4 rows, for every method, with and without a retain set (`docs/methods.md#batches`)."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .conftest import run_two_processes
from .scripts.batch_split_worker import CASES, one_step

SPLITS = [(4, 2), (2, 4)]


def relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    names = [name for name in a if "attn.bias" not in name]
    difference = torch.cat([(a[n] - b[n]).flatten() for n in names]).norm()
    return float(difference / torch.cat([a[n].flatten() for n in names]).norm())


@pytest.fixture(scope="module")
def whole_batch(tmp_path_factory):
    """The 1 × 8 (one micro-batch, no accumulation) update of every case."""
    out = tmp_path_factory.mktemp("whole")
    return {case: one_step(case, str(out), 8, 1) for case, _, _ in CASES}


@pytest.mark.parametrize("case", [case for case, _, _ in CASES])
def test_micro_batch_times_accumulation_gives_the_same_step(case, whole_batch, tmp_path):
    reference = whole_batch[case]
    assert torch.cat([v.flatten() for v in reference.values()]).norm() > 1e-3  # the step moved the weights
    for per_device, accumulation in SPLITS:
        delta = one_step(case, str(tmp_path), per_device, accumulation)
        assert relative_difference(reference, delta) < 1e-4, f"{case}: {per_device}×{accumulation}"


def test_per_micro_batch_means_would_differ(whole_batch, tmp_path, monkeypatch):
    """The check can fail: normalising each micro-batch by its own token count (the old behaviour) moves GA's
    weights differently for 4 × 2."""
    from hf_unlearn.trainers.base_trainer import UnlearnTrainer

    monkeypatch.setattr(UnlearnTrainer, "loss_is_scaled_for_ga", False)  # Trainer divides micro-batch means by 2
    monkeypatch.setattr(UnlearnTrainer, "count_step", lambda self, batches, device: None)
    assert relative_difference(whole_batch["GA"], one_step("GA", str(tmp_path), 4, 2)) > 1e-2


def test_two_processes_give_the_same_step(whole_batch, tmp_path):
    """A user's own script (no hf-unlearn CLI) under `torchrun --nproc_per_node 2` on CPUs, 4 rows per process."""
    run_two_processes([str(Path(__file__).parent / "scripts" / "batch_split_worker.py"), str(tmp_path), "4", "1"])
    for case, _, _ in CASES:
        delta = load_file(str(tmp_path / f"{case}.safetensors"))
        assert relative_difference(whole_batch[case], delta) < 1e-4, f"{case}: 2 processes × 4"
