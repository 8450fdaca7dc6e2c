"""`benchmarks/eval_speed_reference.py --compare`: the item-by-item comparison of the reference's logs with ours, run
through the script's command line on a toy pair of run folders."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def compare(tmp_path, ref, ours) -> dict:
    """The report the script writes for the pair (it is given its own output file: the committed result is never
    touched)."""
    output = tmp_path / "agreement.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/eval_speed_reference.py", "--compare", str(ref), str(ours), "--output", output],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(output.read_text())


def write_pair(tmp_path, ours_nll=2.0, ours_text="Paris"):
    ref, ours = tmp_path / "ref", tmp_path / "ours"
    ref.mkdir()
    ours.mkdir()
    log = {
        "forget_Q_A_Prob": {"agg_value": 0.1, "value_by_index": {"0": {"prob": 0.135, "avg_loss": 2.0}}},
        "forget_Q_A_PERT_Prob": {"value_by_index": {"0": {"avg_loss": [1.0, 3.0]}}},
        "mia_min_k": {"forget": {"value_by_index": {"0": {"score": 4.0}}}},
        "wf_Q_A_ROUGE": {"value_by_index": {"0": {"generation": "Paris", "rougeL_recall": 1.0}}},
    }
    (ref / "TOFU_EVAL.json").write_text(json.dumps(log))
    items = {
        "forget": [{"avg_nll": ours_nll, "prob": 0.135, "wrong_avg_nlls": [1.0, 3.0], "mia_min_k": 4.0}],
        "world_facts": [{"generation": ours_text, "rougeL_recall": 1.0 if ours_text == "Paris" else 0.0}],
    }
    (ours / "items.json").write_text(json.dumps({"splits": items}))
    return ref, ours


def test_compare_matches_values_lists_and_attack_splits(tmp_path):
    report = compare(tmp_path, *write_pair(tmp_path))
    tf = report["teacher_forced"]
    assert tf["forget_Q_A_Prob.avg_loss"] == {"values": 1, "max_rel_diff": 0.0, "beyond_rtol": []}
    assert tf["forget_Q_A_PERT_Prob.avg_loss"]["values"] == 2  # a list compares element by element
    assert tf["mia_min_k/forget.score"]["values"] == 1
    assert report["generation"]["wf_Q_A_ROUGE"] == {"identical": 1, "differ": []}
    # metrics the log lacks are reported as missing, so this toy pair is not "all identical"
    assert "missing" in tf["retain_Q_A_Prob.avg_loss"] and report["all_identical"] is False
    # the tolerance is the one the committed benchmark result states
    committed = json.loads((REPO / "benchmarks" / "results" / "eval_speed_reference.json").read_text())
    assert report["rtol"] == committed["rtol"] > 0


def test_compare_flags_a_value_beyond_the_tolerance_and_a_different_generation(tmp_path):
    rtol = json.loads((REPO / "benchmarks" / "results" / "eval_speed_reference.json").read_text())["rtol"]
    report = compare(tmp_path, *write_pair(tmp_path, ours_nll=2.0 * (1 + 3 * rtol), ours_text="Lyon"))
    assert report["rtol"] == rtol
    entry = report["teacher_forced"]["forget_Q_A_Prob.avg_loss"]
    assert abs(entry["max_rel_diff"] - 3 * rtol) < 1e-9
    assert entry["beyond_rtol"] == [{"index": 0, "reference": 2.0, "ours": 2.0 * (1 + 3 * rtol)}]
    assert report["generation"]["wf_Q_A_ROUGE"]["differ"][0]["ours"] == "Lyon"


def test_compare_refuses_to_write_over_the_committed_result(tmp_path):
    committed = REPO / "benchmarks" / "results" / "eval_speed_reference.json"
    before = committed.read_bytes()
    assert "--output" in refused("--compare", *map(str, write_pair(tmp_path)))
    assert committed.read_bytes() == before


def dry_run(tmp_path, *flags) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/eval_speed_reference.py",
            "--reference-src",
            str(tmp_path / "ref"),
            "--data-dir",
            str(tmp_path / "tofu"),
            "--model",
            str(tmp_path / "model"),
            "--max-items",
            "2",
            "--dry-run",
            *flags,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def refused(*flags) -> str:
    """The script's usage error (exit 2) for these flags: the last line of its stderr."""
    done = subprocess.run(
        [sys.executable, "benchmarks/eval_speed_reference.py", *flags], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    return done.stderr.splitlines()[-1]


def test_thread_and_process_layout_options(tmp_path):
    """Both sides on the same cores: the reference with 2 threads, ours as 2 processes x 1 thread (torchrun); the
    layout goes into the settings the result records, and a dry run runs nothing."""
    plan = dry_run(tmp_path, "--reference-threads", "2", "--ours-threads", "1", "--ours-processes", "2")
    settings, runs = plan["settings"], plan["runs"]
    assert settings["threads_per_process"] == {"reference": 2, "ours": 1}
    assert settings["ours_processes"] == 2 and settings["cores_used"] == {"reference": 2, "ours": 2}
    assert settings["threads_per_run"] is None  # the sides differ
    assert runs["reference"]["env"]["OMP_NUM_THREADS"] == "2" and runs["ours"]["env"]["OMP_NUM_THREADS"] == "1"
    ours = runs["ours"]["command"]
    launcher = ours.index("torch.distributed.run")
    assert ours[launcher + 1 : launcher + 4] == ["--standalone", "--nproc_per_node", "2"]
    assert ours[launcher + 4 : launcher + 7] == ["-m", "hf_unlearn.cli", "eval"]
    assert ours[ours.index("--preset") + 1] == "reference" and ours[ours.index("--max-items") + 1] == "2"
    assert "--child" in runs["reference"]["command"] and "torch.distributed.run" not in runs["reference"]["command"]
    assert not (tmp_path / "ref").exists()  # nothing ran


def test_one_process_layout_by_default(tmp_path):
    plan = dry_run(tmp_path, "--threads", "1")
    settings, ours = plan["settings"], plan["runs"]["ours"]["command"]
    assert settings["threads_per_run"] == 1 and settings["ours_processes"] == 1
    assert settings["threads_per_process"] == {"reference": 1, "ours": 1}
    assert "torch.distributed.run" not in ours and ours[1:4] == ["-m", "hf_unlearn.cli", "eval"]
    assert plan["runs"]["reference"]["env"]["OMP_NUM_THREADS"] == "1"
    flags = ("--reference-src", "r", "--data-dir", "d", "--model", "m", "--ours-processes", "0", "--dry-run")
    assert "--ours-processes" in refused(*flags)


def test_all_items_for_the_full_suite(tmp_path):
    """`--max-items all`: ours gets no limit, the reference's child is told 'all' explicitly (its own default is 20)."""
    plan = dry_run(tmp_path, "--max-items", "all", "--max-new-tokens", "200")
    assert plan["settings"]["max_items_per_split"] is None and plan["settings"]["max_new_tokens"] == 200
    reference, ours = plan["runs"]["reference"]["command"], plan["runs"]["ours"]["command"]
    assert reference[reference.index("--max-items") + 1] == "all" and "--max-items" not in ours
    assert "'all'" in refused("--max-items", "0", "--dry-run")


def test_default_preset_is_timed_only(tmp_path):
    """`--ours-preset default`: ours without `--preset reference`, recorded; refused onto the committed result."""
    plan = dry_run(tmp_path, "--ours-preset", "default", "--output", str(tmp_path / "default.json"))
    assert plan["settings"]["ours_preset"] == "default" and "--preset" not in plan["runs"]["ours"]["command"]
    assert dry_run(tmp_path)["settings"]["ours_preset"] == "reference"
    assert "--output" in refused("--ours-preset", "default", "--dry-run")
