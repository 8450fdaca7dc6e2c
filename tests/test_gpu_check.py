"""`benchmarks/gpu_check.sh --dry-run`: the GPU check's every step on the CPU with a tiny model, one JSON out."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run_writes_its_checks(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--output", str(out), "--max-items", "2"],
        capture_output=True,
        text=True,
        env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": "/tmp"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] is True
    assert result["settings"]["items_per_split"] == {s: 2 for s in result["settings"]["items_per_split"]}
    schedules = result["generation"]["schedules"]
    assert {"generate", "refill", "static_compile"} <= set(schedules)
    for name, entry in schedules.items():
        assert "error" not in entry, (name, entry)
        assert entry["all_identical"] and entry["identical_to_generate"] == result["generation"]["prompts"]
    assert set(result["training"]) == {"IMU", "NPO"}
    for entry in result["training"].values():
        assert entry["loss_finite"] and entry["master_weight_dtypes"] == ["torch.float32"]
    assert result["suite"]["timing_s"]["total"] > 0
    assert result["checks"] == {"schedules_identical": True, "losses_finite": True, "two_process_equal": None}
