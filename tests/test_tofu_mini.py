"""TOFU-mini: a target or retain model given as a LoRA adapter (merged on loading, unlearned in full), the shipped
TOFU-mini recipes and their committed adapters, the GPU recipes of every method (dry runs), and the comparison
script (benchmarks/tofu_mini.py, run through its command line) against hand-computed values and end to end on a
tiny model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hf_unlearn.cli import main
from hf_unlearn.evaluation import value_at_level
from hf_unlearn.evaluation.tofu import TEACHER_FORCED_UTILITY as UTILITY
from hf_unlearn.recipe import RecipeError, load_recipe
from hf_unlearn.tasks.tofu.finetune import load_model
from hf_unlearn.tasks.tofu.recipe import parse_tofu_recipe

from .tofu_helpers import save_tiny_model, tiny_recipe

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "benchmarks" / "results" / "tofu_mini"
# Trainer class prefixes of the 16 methods, as the dry run prints them ("GATrainer(GAConfig)").
METHODS16 = ["GA", "GradDiff", "NPO", "SimNPO", "IMU", "IAU", "MUMis", "IdkNLL", "IdkDPO", "RMU", "UNDIAL", "WGA"]
METHODS16 += ["SatImp", "CEU", "MEGD", "PDU"]


def script(*argv) -> subprocess.CompletedProcess:
    """`python benchmarks/tofu_mini.py ARGV` from the repository root (tests always give their own --json and
    --plot: the committed results are never written)."""
    command = [sys.executable, "benchmarks/tofu_mini.py", *map(str, argv)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def base_and_adapter(tmp_path_factory):
    """A tiny Llama and a LoRA adapter on it whose B matrices are random (a fresh LoRA is the identity)."""
    from peft import LoraConfig, get_peft_model

    folder = tmp_path_factory.mktemp("mini")
    base = save_tiny_model(folder / "base")
    model, _ = load_model(parse_tofu_recipe(_given(base, None), dry_run=True).given["target"])
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(folder / "adapter")
    return base, folder / "adapter"


def _given(base, adapter, out="unused", **changes):
    target = {"name_or_path": str(base)} | ({"adapter": str(adapter)} if adapter else {})
    recipe = tiny_recipe(base, out, models={"target": target, "retain": {"name_or_path": str(base)}}, **changes)
    recipe.pop("finetune")
    return recipe


def test_an_adapter_target_is_merged_on_loading(base_and_adapter):
    from peft import PeftModel

    base, adapter = base_and_adapter
    spec = parse_tofu_recipe(_given(base, adapter), dry_run=True).given["target"]
    assert spec.adapter == str(adapter) and spec.merge_adapter
    assert "adapter" in spec.describe() and spec.identity()["adapter_sha256"]
    merged, tokenizer = load_model(spec)
    assert not isinstance(merged, PeftModel)
    assert all(p.requires_grad for p in merged.parameters())  # a plain model: the methods train it in full
    plain_spec = parse_tofu_recipe(_given(base, None), dry_run=True).given["target"]
    plain = load_model(plain_spec)[0]
    unmerged = PeftModel.from_pretrained(load_model(plain_spec)[0], adapter)
    ids = tokenizer("The author wrote a book.", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = merged(ids).logits
        assert torch.allclose(logits, unmerged(ids).logits, atol=1e-5)  # the same function as base + adapter
        assert not torch.allclose(logits, plain(ids).logits, atol=1e-3)  # and not the base's


def test_a_run_unlearns_an_adapter_target_in_full(base_and_adapter, tmp_path):
    from safetensors.torch import load_file

    base, adapter = base_and_adapter
    out = tmp_path / "out"
    recipe = _given(base, adapter, out, methods={"GA": {}})
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["run", str(tmp_path / "r.yaml")]) == 0
    results = json.loads((out / "results.json").read_text())
    assert "+ adapter" in results["models"]["target"]["source"]
    assert "finetune/target" not in results["stages"]
    unlearned = load_file(str(out / "methods" / "GA" / "model" / "model.safetensors"))  # a full model, merged
    merged, _ = load_model(parse_tofu_recipe(recipe, dry_run=True).given["target"])
    state = merged.state_dict()
    assert set(unlearned) <= set(state) and not any(".lora_" in name for name in unlearned)
    assert any(not torch.equal(unlearned[name], state[name]) for name in unlearned)  # GA moved the merged weights
    # A re-run reuses the unlearned model: the adapter's files are part of the target's identity.
    assert main(["run", str(tmp_path / "r.yaml")]) == 0
    assert json.loads((out / "results.json").read_text())["stages"]["unlearn/GA"]["reused"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"models": {"train_data": ["forget05"], "adapter": "x"}}, "not both"),
        ({"unlearn_lora": {"r": 2, "target_modules": ["q_proj"]}}, "unlearn_lora on a target given as an adapter"),
    ],
)
def test_bad_adapter_recipes_are_refused(base_and_adapter, change, message):
    base, adapter = base_and_adapter
    recipe = _given(base, adapter)
    if "models" in change:
        recipe["models"]["target"] = change["models"]
        recipe["models"]["base"] = {"name_or_path": str(base)}
        recipe["finetune"] = {"learning_rate": 1e-3}
    else:
        recipe.update(change)
    with pytest.raises((RecipeError, ValueError), match=message):
        parse_tofu_recipe(recipe, dry_run=True)


def test_a_missing_adapter_folder_is_named(base_and_adapter, tmp_path, capsys):
    base, _ = base_and_adapter
    recipe = _given(base, tmp_path / "nope", tmp_path / "out")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["run", str(tmp_path / "r.yaml"), "--dry-run"]) != 0
    assert "models.target.adapter" in capsys.readouterr().err


def test_the_committed_adapters_are_small_lora_on_attention():
    for role in ("target", "retain"):
        config = json.loads((MINI / role / "adapter_config.json").read_text())
        weights = MINI / role / "adapter_model.safetensors"
        assert config["r"] == 8 and config["lora_alpha"] == 16 and config["peft_type"] == "LORA"
        assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
        assert weights.stat().st_size < 5_000_000
        from safetensors.torch import load_file

        tensors = load_file(str(weights))
        # 30 layers x 4 projections x (A, B); SmolLM2-135M: hidden 576, 3 KV heads of 64.
        assert len(tensors) == 240
        assert sum(t.numel() for t in tensors.values()) == 30 * 8 * (4 * 576 + 576 + 2 * 192 + 576)


def test_the_mini_recipes_use_the_committed_adapters_and_dry_run(base_and_adapter, tmp_path, capsys, monkeypatch):
    base, _ = base_and_adapter
    monkeypatch.chdir(ROOT)  # the adapters' paths are relative to the repository root
    plan = parse_tofu_recipe(load_recipe("tofu/mini_smollm2"), dry_run=True)
    assert plan.forget_split == "forget01" and not plan.train_data
    assert {role: Path(spec.adapter) for role, spec in plan.given.items()} == {
        "target": Path("benchmarks/results/tofu_mini/target"),
        "retain": Path("benchmarks/results/tofu_mini/retain"),
    }
    grid = {f"{method}_lr{lr}" for method in ("SimNPO", "SatImp", "RMU") for lr in ("3e-4", "1e-3")}
    assert set(plan.specs) == {"GA", "NPO", "SimNPO", "IMU", "WGA", "SatImp", "RMU", "IdkDPO"} | grid
    for label in grid:  # the stated grid: the method's defaults at another learning rate
        method, lr = label.split("_lr")
        assert plan.specs[label]["method"] == method and plan.specs[label]["learning_rate"] == float(lr)
    assert plan.specs["SimNPO_lr1e-3"]["method"] == "SimNPO" and plan.specs["SimNPO_lr1e-3"]["learning_rate"] == 1e-3
    assert plan.trajectory.stop_at.startswith("forget_Q_A_Prob <=") and plan.trajectory.max_forget_items == 20
    adapters = parse_tofu_recipe(load_recipe("tofu/mini_smollm2_adapters"), dry_run=True)
    assert adapters.finetune_lora["r"] == 8 and set(adapters.train_data) == {"target", "retain"}
    # The retain model's data is the target's less forget01; the unlearning retain set is the same rows.
    assert [s.config for s in adapters.train_data["target"]] == ["full", "forget01"]
    assert adapters.train_data["retain"] == adapters.train_data["target"][:1] == plan.unlearn_data["retain"]
    # The dry run checks the adapter folders (a tiny base stands in for SmolLM2: nothing is loaded).
    sets = [f"--set=models.{role}.name_or_path={base}" for role in ("target", "retain")]
    assert main(["run", "tofu/mini_smollm2", "--dry-run", "--output-dir", str(tmp_path / "o"), *sets]) == 0
    printed = capsys.readouterr().out
    assert "+ adapter benchmarks/results/tofu_mini/target" in printed and "stop at forget_Q_A_Prob <=" in printed


@pytest.mark.parametrize("split", ["forget05", "forget10"])
def test_gpu_recipes_list_every_method_and_dry_run_offline(split, tmp_path, capsys, no_loading):
    name = f"tofu/gpu/llama32_1b_{split}"
    assert main(["run", name, "--dry-run", "--output-dir", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    retain = {"forget05": "retain95", "forget10": "retain90"}[split]
    assert f"open-unlearning/tofu_Llama-3.2-1B-Instruct_{retain}" in printed
    assert f"forget = {split}, retain = {retain}" in printed
    for prefix in METHODS16:
        assert f"{prefix}Trainer({prefix}Config)" in printed
    lines = {line.split(":")[0].strip(): line for line in printed.splitlines() if "Trainer(" in line}
    assert len(lines) == 16
    for label, line in lines.items():
        if label != "IAU":  # one plain-SGD step by design
            assert "= 32, bf16 autocast, fp32 weights" in line and "warmup 0.1, weight decay 0.01" in line
            expected = "lr 0.0001" if label == "UNDIAL" else "lr 1e-05"
            epochs = "5 epochs" if label in ("WGA", "SatImp", "ME+GD") else "10 epochs"
            assert f"{expected}, {epochs}" in line
    assert not (tmp_path / "out").exists()


def test_matched_reads_utility_where_forget_prob_first_reaches_each_level(tmp_path):
    """`--from-json` on a result file written by hand: the matched table from its histories."""
    u = UTILITY
    history = [
        {"step": 0, "forget_Q_A_Prob": 0.8, u: 0.50},
        {"step": 2, "forget_Q_A_Prob": 0.4, u: 0.40},
        {"step": 4, "forget_Q_A_Prob": 0.1, u: 0.10},
    ]
    model = {"forget_Q_A_Prob": 0.8, "forget_Q_A_ROUGE": 0.9, "model_utility": 0.5}
    end = {**model, "forget_Q_A_Prob": 0.1, "reached": True, "steps": 4}
    given = {
        "benchmark": "tofu_mini_hand",
        "stop_at": "forget_Q_A_Prob <= 0.1",
        "levels_forget_Q_A_Prob": [0.6, 0.4, 0.2, 0.05],
        "histories": {"GA": history},
        "models": {"target": model, "retain": model},
        "end_points": {"GA": end},
    }
    (tmp_path / "given.json").write_text(json.dumps(given))
    result, figure = tmp_path / "again.json", tmp_path / "again.png"
    script("--from-json", tmp_path / "given.json", "--json", result, "--plot", figure)
    table = json.loads(result.read_text())["matched"]
    # 0.6 is half way from 0.8 to 0.4: utility half way from 0.5 to 0.4; 0.2 is 2/3 of the way from 0.4 to 0.1.
    assert table["GA"]["0.6"] == pytest.approx(0.45)
    assert table["GA"]["0.4"] == pytest.approx(0.40)
    assert table["GA"]["0.2"] == pytest.approx(0.40 - (2 / 3) * 0.30)
    assert table["GA"]["0.05"] is None  # never reached
    assert figure.stat().st_size > 1000


def test_the_stop_level_is_written_to_six_digits(base_and_adapter, tmp_path):
    base, adapter = base_and_adapter
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(_given(base, adapter, tmp_path / "out")))
    done = script("--recipe", tmp_path / "r.yaml", "--stop-at", "0.123456789", "--dry-run")
    assert "stop at forget_Q_A_Prob <= 0.123457\n" in done.stdout
    assert not (tmp_path / "out").exists()


def matched_by_hand(histories, levels, metric):
    return {
        label: {
            f"{level:g}": value_at_level(history, "forget_Q_A_Prob", metric, level, falling=True) for level in levels
        }
        for label, history in histories.items()
    }


def test_the_comparison_script_runs_end_to_end(base_and_adapter, tmp_path):
    base, adapter = base_and_adapter
    recipe = _given(
        base,
        adapter,
        tmp_path / "out",
        unlearn={"learning_rate": 1e-2, "max_steps": 3, "per_device_train_batch_size": 2, "disable_tqdm": True},
        methods={"GA": {}, "WGA": {}},
        trajectory={
            "eval_steps": 1,
            "max_forget_items": 3,
            "max_utility_items": 2,
            "stop_at": "forget_Q_A_Prob <= 0",
        },
    )
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result, figure = tmp_path / "r.json", tmp_path / "r.png"
    argv = ["--recipe", tmp_path / "r.yaml", "--json", result, "--plot", figure]
    argv += ["--matched-metric", "retain_Q_A_Prob"]
    script(*argv, "--methods", "WGA", "GA", "--stop-at", "retain", "--levels", "0.9", "0.05")
    payload = json.loads(result.read_text())
    # --stop-at retain: the retain model's forget prob on the trajectory's items (the first 3 of 5), from its
    # evaluation stage, which the run then reuses.
    items = json.loads((tmp_path / "out" / "eval" / "retain" / "items.json").read_text())["splits"]["forget"]
    assert len(items) == 5
    level = sum(item["prob"] for item in items[:3]) / 3
    assert payload["stop_at"] == f"forget_Q_A_Prob <= {level:.6g}" and payload["stages"]["eval/retain"]["reused"]
    assert figure.stat().st_size > 1000
    assert list(payload["end_points"]) == list(payload["histories"]) == payload["methods_to_run"] == ["WGA", "GA"]
    assert payload["stages"]["unlearn/WGA"]["reused"] and not payload["stages"]["unlearn/GA"]["reused"]  # one by one
    for label in ("WGA", "GA"):
        history, end = payload["histories"][label], payload["end_points"][label]
        assert end["steps"] == history[-1]["step"]
        assert end["reached"] == (history[-1]["forget_Q_A_Prob"] <= float(payload["stop_at"].split("<=")[1]))
        assert end["steps"] == 3 or end["reached"]  # stops at the level, else runs its maximum
        assert all(h["forget_Q_A_Prob"] > level for h in history[:-1])  # never ran past a reached level
    expected = matched_by_hand({"GA": payload["histories"]["GA"]}, [0.9, 0.05], "retain_Q_A_Prob")["GA"]
    assert payload["matched"]["GA"] == expected
    # --from-json: the tables and plot again from the result file (another metric), nothing run.
    again, figure2 = tmp_path / "again.json", tmp_path / "again.png"
    script("--from-json", result, "--json", again, "--plot", figure2)
    redone = json.loads(again.read_text())
    assert redone["matched"] == matched_by_hand(payload["histories"], [0.9, 0.05], UTILITY)
    assert redone["end_points"] == payload["end_points"] and figure2.stat().st_size > 1000
    assert payload["models"]["target"]["forget_Q_A_Prob"] > 0 and payload["load_average"]["start"]

    # --seeds: GA again with seed 3 beside the recipe's own seed, trajectories only; the own-seed model is the one above.
    own, seeds = str(recipe.get("seed", 42)), tmp_path / "seeds.json"
    argv = ["--recipe", tmp_path / "r.yaml", "--json", seeds, "--matched-metric", "retain_Q_A_Prob"]
    script(*argv, "--methods", "GA", "--stop-at", "retain", "--levels", "0.9", "0.05", "--seeds", "3", own)
    swept = json.loads(seeds.read_text())
    assert swept["seeds"] == sorted([3, int(own)]) and list(swept["histories"]) == ["GA", "GA_seed3"]
    assert swept["stages"]["unlearn/GA"]["reused"] and not swept["stages"]["unlearn/GA_seed3"]["reused"]
    assert "eval/GA_seed3" not in swept["stages"] and not (tmp_path / "out" / "methods" / "GA_seed3" / "eval").exists()
    assert swept["histories"]["GA"] == payload["histories"]["GA"]
    assert swept["histories"]["GA_seed3"] != swept["histories"]["GA"]  # another batch order
    ga = swept["methods"]["GA"]
    assert ga["seeds"][own] == expected
    assert ga["seeds"]["3"] == matched_by_hand(swept["histories"], [0.9, 0.05], "retain_Q_A_Prob")["GA_seed3"]
    for level in ("0.9", "0.05"):
        values = [ga["seeds"][seed][level] for seed in (own, "3") if ga["seeds"][seed][level] is not None]
        assert ga["summary"][level]["n"] == len(values) and ga["summary"][level]["of"] == 2
        if values:
            assert ga["summary"][level]["mean"] == pytest.approx(sum(values) / len(values))
    metric = "ra_Q_A_Prob_normalised"
    again = script("--from-json", seeds, "--matched-metric", metric, "--levels", "0.9")  # another metric
    by_hand = matched_by_hand(swept["histories"], [0.9], metric)
    values = [cells["0.9"] for cells in by_hand.values() if cells["0.9"] is not None]
    assert f"{metric} @ forget prob 0.9" in again.stdout
    assert f"| GA     | {sum(values) / len(values):.3f} ± " in again.stdout and f"({len(values)}/2)" in again.stdout


def test_attack_mode_keeps_the_batch_per_step_in_one_process(base_and_adapter, tmp_path):
    """`--attacks` on a two-process recipe: one process, each batch per device doubled (the plan of a dry run)."""
    base, adapter = base_and_adapter
    recipe = _given(
        base,
        adapter,
        tmp_path / "out",
        unlearn={"per_device_train_batch_size": 2, "max_steps": 2},
        methods={"GA": {}, "NPO": {"per_device_train_batch_size": 3}},
        launch={"num_processes": 2},
    )
    attacks = {"attacks": ["relearn"], "relearn": {"steps": [0, 1], "batch_size": 2}, "relearn_rows": 2}
    attacks["relearn_sets"] = ["forget_subset"]
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({**recipe, "attacks": attacks}))
    argv = ["--recipe", tmp_path / "r.yaml", "--stop-at", "0.5", "--dry-run"]
    plain = script(*argv).stdout
    assert "x 2 process(es)" in plain and "--num_processes 2" in plain
    attacked = script(*argv, "--attacks", tmp_path / "a.yaml").stdout
    lines = {line.split(":")[0].strip(): line for line in attacked.splitlines()}
    assert "batch 4 x 1 accumulation x 1 process(es) = 4" in lines["GA"]  # the recipe's 2 per device, doubled
    assert "batch 6 x 1 accumulation x 1 process(es) = 6" in lines["NPO"]  # the method's own 3, doubled
    assert "accelerate launch --num_processes 1 " in attacked and "--num_processes 2" not in attacked
    assert not (tmp_path / "out").exists()


def test_attack_mode_is_refused_without_attacks_or_under_several_processes(base_and_adapter, tmp_path):
    base, adapter = base_and_adapter
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(_given(base, adapter, tmp_path / "out")))
    argv = [sys.executable, "benchmarks/tofu_mini.py", "--recipe", str(tmp_path / "r.yaml"), "--dry-run"]
    argv += ["--stop-at", "0.5", "--attacks", str(tmp_path / "r.yaml")]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "no `attacks:` section" in done.stderr
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"attacks": {"attacks": ["relearn"]}}))
    argv[-1] = str(tmp_path / "a.yaml")
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "WORLD_SIZE": "2"})
    assert done.returncode == 2 and "one process" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_attack_mode_attacks_the_comparisons_own_models(base_and_adapter, tmp_path):
    base, adapter = base_and_adapter
    recipe = _given(
        base,
        adapter,
        tmp_path / "out",
        unlearn={"learning_rate": 1e-2, "max_steps": 2, "per_device_train_batch_size": 2, "disable_tqdm": True},
        methods={"GA": {}},
        trajectory={"eval_steps": 1, "max_forget_items": 3, "max_utility_items": 2, "stop_at": "forget_Q_A_Prob <= 0"},
    )
    attacks = {
        "attacks": ["relearn", "prefix", "logit_lens"],
        "relearn": {"steps": [0, 1, 2], "learning_rate": 1e-2, "batch_size": 2},
        "relearn_sets": ["forget_subset"],
        "relearn_rows": 2,
        "eval_examples": 2,
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({**recipe, "attacks": attacks}))
    argv = ["--recipe", tmp_path / "r.yaml", "--stop-at", "retain"]
    script(*argv, "--json", tmp_path / "c.json", "--plot", tmp_path / "c.png")
    result, figure = tmp_path / "a.json", tmp_path / "a.png"
    tables = script(*argv, "--attacks", tmp_path / "a.yaml", "--json", result, "--plot", figure).stdout
    payload = json.loads(result.read_text())
    comparison = json.loads((tmp_path / "c.json").read_text())
    assert payload["stop_at"] == comparison["stop_at"] and payload["stages"]["unlearn/GA"]["reused"]  # the same model
    assert payload["stages"]["eval/GA"]["reused"] and not payload["stages"]["attacks/methods/GA"]["reused"]
    assert payload["settings"]["attacks"]["relearn_rows"] == 2 and figure.stat().st_size > 1000
    assert "relearn/forget_subset" in payload["attack_controls"]["original"]
    assert "relearn/forget_subset" in payload["attack_controls"]["retrained"]
    curves = payload["relearn_curves"]["forget_loss"]  # the plotted points
    assert list(curves) == ["GA", "target (original)", "retain (retrained)"]
    checkpoints = payload["methods"]["GA"]["attacks"]["results"]["relearn/forget_subset"]["checkpoints"]
    assert curves["GA"] == [[point["step"], point["forget_loss"]] for point in checkpoints] and len(checkpoints) == 3
    before = payload["methods"]["GA"]["attacks"]["results"]["before"]["forget_loss"]
    assert curves["GA"][0] == [0, pytest.approx(before)]  # step 0 is the unlearned model itself
    assert "Recovery of forget_Q_A_Prob" in tables


def test_an_unknown_matched_metric_fails_before_anything_runs():
    command = [sys.executable, "benchmarks/tofu_mini.py", "--matched-metric", "ra_Q_A_Prob", "--dry-run"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--matched-metric: 'ra_Q_A_Prob' is not a trajectory metric" in done.stderr.splitlines()[-1]
    assert "ra_Q_A_Prob_normalised" in done.stderr  # the names it takes
