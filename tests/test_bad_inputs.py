"""Bad input (recipes, API, TOFU data, model sources) fails early with one clear line, and no run silently does nothing or reuses a stale result.

Each CLI case asserts the exit code, that the message names the problem, and that no traceback reaches the user;
each API case asserts the exception type and that its message names the field. Tiny models only.
"""

import copy
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

from hf_unlearn.cli import main
from hf_unlearn.data import tofu as tofu_data
from hf_unlearn.data.tofu import load_tofu
from hf_unlearn.runtime import io as runtime_io
from hf_unlearn.runtime.hashing import folder_sha256
from hf_unlearn.runtime.lock import LOCK_FILE
from hf_unlearn.tasks.markov import task as markov_task
from hf_unlearn.tasks.tofu.recipe import ModelSpec
from hf_unlearn.trainers import GAConfig, GATrainer, IMUConfig, IMUTrainer

from .test_cli import TINY
from .test_tofu_pipeline import tiny_recipe, write
from .tofu_helpers import FIXTURE_DIR, fixture_rows, make_model, make_tokenizer, save_tiny_model, write_fixture

FAST = {"max_steps": 1, "per_device_train_batch_size": 2, "disable_tqdm": True, "report_to": "none"}


def markov(**changes):
    """TINY with GA only, `changes` merged into its sections."""
    recipe = copy.deepcopy(TINY)
    recipe["methods"] = {"GA": {}}
    for key, value in changes.items():
        recipe[key] = {**recipe[key], **value} if isinstance(value, dict) and key != "methods" else value
    return recipe


def run_cli(tmp_path, recipe, capsys, out=None, extra=()):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    code = main(["run", str(path), "--output-dir", str(out or tmp_path / "out"), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ------------------------------------------------------------------------------------------------ recipes (CLI)


@pytest.mark.parametrize(
    "change, fragments",
    [
        ({"unlearn": {"max_steps": 0}}, ["max_steps=0 would train nothing"]),
        ({"unlearn": {"max_steps": -1, "num_train_epochs": 0}}, ["num_train_epochs=0", "would train nothing"]),
        (
            {"methods": {"NPO": {"retain_loss": "none", "retain_loss_weight": 2.0}}},
            ["methods.NPO", "retain_loss_weight=2.0 has no effect with retain_loss='none'"],
        ),
        ({"unlearn": {"learning_rate": "fast"}}, ["learning_rate: 'fast' is not a number"]),
        ({"methods": {"NPO": {"beta": "one"}}}, ["methods.NPO.beta: 'one' is not a number"]),
        ({"unlearn": {"max_steps": "ten"}}, ["max_steps: 'ten' is not an integer"]),
        ({"methods": {"FOO": {}}}, ["Unknown method 'FOO'"]),
        ({"model": {"n_positions": 4}}, ["model.n_positions: 4 is shorter than the sequences (8 states)"]),
        ({"model": {"n_embd": 30, "n_head": 4}}, ["model.n_embd: 30 is not divisible by model.n_head=4"]),
        ({"model": {"n_layer": 0}}, ["model.n_layer: 0 must be >= 1"]),
        ({"train": {"learning_rat": 1e-3}}, ["Unknown key(s) in train", "did you mean 'learning_rate'"]),
        ({"evaluation": {"batch_size": 0}}, ["batch_size must be >= 1"]),
    ],
    ids=lambda value: None if isinstance(value, dict) else "",
)
def test_bad_markov_recipe_values_fail_before_anything_trains(tmp_path, capsys, change, fragments):
    code, _, err = run_cli(tmp_path, markov(**change), capsys)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "out" / "models").exists()  # nothing was trained


def test_a_dry_run_refuses_heads_that_do_not_divide_the_hidden_size(tmp_path, capsys):
    code, out, err = run_cli(tmp_path, markov(model={"n_embd": 30, "n_head": 4}), capsys, extra=["--dry-run"])
    assert_one_line_error(code, err, "model.n_embd: 30 is not divisible by model.n_head=4")
    assert out == ""


def test_a_train_section_with_trainer_settings_is_accepted(tmp_path, capsys):
    """`train: {logging_steps: 20}` once clashed with a default ("got multiple values"); it is a plain override."""
    code, out, err = run_cli(tmp_path, markov(train={"logging_steps": 20}), capsys, extra=["--dry-run"])
    assert code == 0, err
    assert "'logging_steps': 20" in out


def test_an_output_folder_that_is_a_file_fails_at_once(tmp_path, capsys):
    (tmp_path / "taken").write_text("not a folder")
    code, _, err = run_cli(tmp_path, markov(), capsys, out=tmp_path / "taken" / "out")
    assert_one_line_error(code, err, "taken is a file, not a folder")


def test_an_output_folder_that_is_not_writable_fails_at_once(tmp_path, capsys, monkeypatch):
    # Root ignores file modes, so the refusal of the file system is simulated where the check writes its probe.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(runtime_io.tempfile, "mkstemp", refuse)
    code, _, err = run_cli(tmp_path, markov(), capsys)
    assert_one_line_error(code, err, "is not writable (Permission denied)")
    assert not (tmp_path / "out" / "models").exists()


def test_a_nan_loss_is_one_line_from_the_cli(tmp_path, capsys, monkeypatch):
    original = GATrainer.compute_loss

    def nan_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = original(self, model, inputs, return_outputs, num_items_in_batch)
        return self.check_finite(loss * float("nan"))

    monkeypatch.setattr(GATrainer, "compute_loss", nan_loss)
    code, _, err = run_cli(tmp_path, markov(), capsys)
    assert_one_line_error(code, err, "unlearning loss is nan")


def test_debug_keeps_the_traceback(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(markov(unlearn={"max_steps": 0})))
    with pytest.raises(ValueError, match="max_steps=0"):
        main(["--debug", "run", str(path), "--output-dir", str(tmp_path / "out")])


# ------------------------------------------------------------------------------------------------ one run per folder


def test_a_second_run_into_a_held_folder_fails_naming_the_holder(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "out"
        out.mkdir()
        lock = {"pid": holder.pid, "host": os.uname().nodename, "started": "2026-12-03T06:00:00", "command": "x"}
        lock["process_start"] = int(Path(f"/proc/{holder.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        (out / LOCK_FILE).write_text(json.dumps(lock))
        code, _, err = run_cli(tmp_path, markov(), capsys, out=out)
        assert_one_line_error(
            code, err, f"pid {holder.pid}", "started 2026-12-03T06:00:00", f"delete {out / LOCK_FILE}"
        )
        assert (out / LOCK_FILE).is_file() and not (out / "models" / "original").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_and_every_lock_released(tmp_path, capsys):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": gone.pid, "host": os.uname().nodename, "started": "then"}))
    code, stdout, err = run_cli(tmp_path, markov(), capsys, out=out)
    assert code == 0, err
    assert f"Removing the stale lock of {out.resolve()} (pid {gone.pid}" in stdout
    assert not list(out.rglob(LOCK_FILE))


# ------------------------------------------------------------------------------------------------ stale results


def test_an_interrupted_rerun_never_leaves_old_results_marked_complete(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert run_cli(tmp_path, markov(), capsys, out=out)[0] == 0
    old = json.loads((out / "results.json").read_text())
    assert old["complete"] and (out / "tradeoff.png").is_file()

    def interrupted(self, recipe, log, options):
        raise KeyboardInterrupt

    monkeypatch.setattr(markov_task.MarkovTask, "run_stages", interrupted)
    changed = markov(unlearn={"learning_rate": 5e-3})
    assert run_cli(tmp_path, changed, capsys, out=out)[0] == 130
    now = json.loads((out / "results.json").read_text())
    assert now["complete"] is False and now["settings"]["unlearn"]["learning_rate"] == 5e-3
    assert not (out / "tradeoff.png").exists()  # the old plot moved with the old results
    assert json.loads((out / "previous" / "results.json").read_text()) == old
    assert (out / "previous" / "tradeoff.png").is_file()


def test_replaced_weights_of_a_cached_model_are_recomputed(tmp_path, capsys):
    """Same file size, other content: the stage is recomputed (file names and sizes are not the key)."""
    out = tmp_path / "out"
    assert run_cli(tmp_path, markov(), capsys, out=out)[0] == 0
    weights = out / "models" / "original" / "model.safetensors"
    trained = load_file(weights)
    time.sleep(0.01)  # a new modification time even on coarse clocks
    save_file({name: torch.zeros_like(tensor) for name, tensor in trained.items()}, weights, metadata={"format": "pt"})
    assert weights.stat().st_size == (out / "models" / "retrained" / "model.safetensors").stat().st_size
    code, stdout, err = run_cli(tmp_path, markov(), capsys, out=out)
    assert code == 0, err
    assert "The cached original model" in stdout and "changed after it was made (model.safetensors" in stdout
    assert "Reusing the cached retrained model" in stdout  # untouched: still reused
    retrained_again = load_file(weights)
    assert all(torch.equal(retrained_again[name], trained[name]) for name in trained)  # made again, identically


# ------------------------------------------------------------------------------------------------ API inputs


@pytest.fixture
def gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=11, n_positions=8, n_embd=16, n_layer=1, n_head=2, pad_token_id=10))


def rows(*sequences, labels=None):
    return Dataset.from_dict({"input_ids": list(sequences), "labels": labels or [list(s) for s in sequences]})


FORGET = rows([1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5, 6])


@pytest.mark.parametrize(
    "field, value, error, fragment",
    [
        ("learning_rate", "1e-4", TypeError, "learning_rate='1e-4' is not a number"),
        ("max_steps", "3", TypeError, "max_steps='3' is not an integer"),
        ("max_grad_norm", None, TypeError, "max_grad_norm=None is not a number: use 0"),
        ("max_steps", 0, ValueError, "max_steps=0 would train nothing"),
        ("retain_loss_weight", 0.5, ValueError, "retain_loss_weight=0.5 has no effect"),
    ],
)
def test_config_values_are_checked_naming_the_field(tmp_path, field, value, error, fragment):
    with pytest.raises(error, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        GAConfig(output_dir=str(tmp_path), **{field: value})


def test_a_num_train_epochs_of_zero_is_refused(tmp_path):
    with pytest.raises(ValueError, match="num_train_epochs=0 would train nothing"):
        GAConfig(output_dir=str(tmp_path), num_train_epochs=0)


@pytest.mark.parametrize(
    "forget, fragment",
    [
        (rows([1, 2, 30]), "token ids outside the model's vocabulary (0..10), e.g. index 0 (ids 1..30)"),
        (rows([1, 2, 3], labels=[[1, 2]]), "labels of another length than input_ids, e.g. index 0 (2 labels for 3"),
        (rows(list(range(10))), "1 example(s) of the forget dataset are longer than the model's context of 8 tokens"),
        (rows([1, 2, 3], labels=[[-100, -100, -100]]), "have no target token"),
        (
            rows([1, 2, 3], [1, 2, 3], labels=[[-100, 2, 3], [-100, 2, 11]]),
            "1 example(s) of the forget dataset have labels outside the model's vocabulary (0..10, or -100 for no "
            "target), e.g. index 1 (labels 2..11)",
        ),
        (Dataset.from_dict({"input_ids": [[1, 2]]}), "missing column(s) ['labels']"),
        (FORGET.select([]), "The forget dataset is empty"),
    ],
)
def test_unusable_rows_fail_before_training(gpt2, tmp_path, forget, fragment):
    with pytest.raises(ValueError) as raised:
        GATrainer(gpt2, GAConfig(output_dir=str(tmp_path), **FAST), forget_dataset=forget)
    assert fragment in str(raised.value)


def test_non_finite_weights_are_named_before_influence_scores(gpt2, tmp_path):
    with torch.no_grad():
        gpt2.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite weights .* 'transformer.h.0.mlp.c_fc.weight'"):
        IMUTrainer(gpt2, IMUConfig(output_dir=str(tmp_path), **FAST), forget_dataset=FORGET)


def test_forget_rows_in_the_retain_set_are_counted(gpt2, tmp_path, caplog):
    import transformers

    transformers.logging.enable_propagation()
    try:
        retain = rows([1, 2, 3, 4], [7, 8, 9], [3, 4, 5, 6])
        config = GAConfig(output_dir=str(tmp_path), retain_loss="nll", **FAST)
        with caplog.at_level("WARNING"):
            GATrainer(gpt2, config, forget_dataset=FORGET, retain_dataset=retain)
    finally:
        transformers.logging.disable_propagation()
    assert "2 of the 3 forget examples are also in the retain set" in caplog.text


def test_a_tokenizer_without_pad_is_named(gpt2, tmp_path):
    gpt2.config.pad_token_id = None
    with pytest.raises(ValueError, match="No pad token"):
        GATrainer(gpt2, GAConfig(output_dir=str(tmp_path), **FAST), forget_dataset=FORGET)


# ------------------------------------------------------------------------------------------------ TOFU: replaced target


def test_replacing_the_target_weights_recomputes_every_dependent_stage(tmp_path, capsys):
    """A given target overwritten by other weights of the same size: its evaluation, the unlearned model and that
    model's evaluation are all recomputed; the retain model's evaluation (untouched) is reused."""
    from .tofu_helpers import FIXTURE_DIR, make_model, make_tokenizer, save_tiny_model

    target = save_tiny_model(tmp_path / "target")
    retain = save_tiny_model(tmp_path / "retain")
    recipe = {
        "task": "tofu",
        "data_dir": str(FIXTURE_DIR),
        "forget_split": "forget05",
        "seed": 0,
        "models": {"target": {"name_or_path": str(target)}, "retain": {"name_or_path": str(retain)}},
        "unlearn_data": {"forget": ["forget05"], "retain": ["retain_perturbed"]},
        "unlearn": {"learning_rate": 1e-3, "max_steps": 1, "per_device_train_batch_size": 2, "disable_tqdm": True},
        "methods": {"GA": {}},
        "evaluation": {"batch_size": 8, "max_new_tokens": 2, "max_items": 3},
        "report": {"samples": 1},
    }
    out = tmp_path / "out"
    code, _, err = run_cli(tmp_path, recipe, capsys, out=out)
    assert code == 0, err
    first = json.loads((out / "results.json").read_text())
    size = (target / "model.safetensors").stat().st_size
    make_model(make_tokenizer(), seed=1).save_pretrained(target)  # other weights, same shapes
    assert (target / "model.safetensors").stat().st_size == size

    assert run_cli(tmp_path, recipe, capsys, out=out)[0] == 0
    second = json.loads((out / "results.json").read_text())
    reused = {name: stage["reused"] for name, stage in second["stages"].items()}
    assert reused == {"eval/retain": True, "eval/target": False, "unlearn/GA": False, "eval/GA": False}
    assert second["models"]["target"]["metrics"] != first["models"]["target"]["metrics"]


# ------------------------------------------------------------------------------------------------ TOFU inputs


MISSING_REPO = "hf-unlearn-test/no-such-model-7f3a"


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory):
    """A tiny model whose tokenizer has no chat template (the plain 'Question: ... Answer:' fallback)."""
    folder = tmp_path_factory.mktemp("plain")
    tokenizer = make_tokenizer(chat_template=None)
    make_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Hub access off, as HF_HUB_OFFLINE=1 does (the Hub libraries read it when imported, so their flags too), with an
    empty cache: nothing can be fetched or found."""
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


def cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_error(code, out, err, *texts, command="run"):
    """Exit 2, one `hf-unlearn COMMAND: error:` line naming the problem, no traceback anywhere."""
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith(f"hf-unlearn {command}: error:")]
    assert len(lines) == 1, err
    for text in texts:
        assert text in lines[0], lines[0]
    assert "Traceback" not in out + err


def assert_nothing_trained(out_dir: Path):
    assert not list(out_dir.rglob("*.safetensors")) and not list(out_dir.rglob("summary.json"))


def run_broken(base_model, tmp_path, capsys, *, overrides=None, raw=None, **changes):
    """`hf-unlearn run` on the tiny recipe with a data folder whose configs are replaced (`overrides`: rows, `raw`:
    file text)."""
    data = write_fixture(tmp_path / "data", overrides)
    for name, text in (raw or {}).items():
        (data / f"{name}.jsonl").write_text(text)
    out = tmp_path / "out"
    recipe = tiny_recipe(base_model, out, data_dir=str(data), **changes)
    code, stdout, stderr = cli(["run", write(tmp_path / "r.yaml", recipe)], capsys)
    assert_nothing_trained(out)
    return code, stdout, stderr


# ------------------------------------------------------------------------------------------------ item 7: data


def test_a_broken_jsonl_line_names_the_file_and_its_real_line(base_model, tmp_path, capsys):
    lines = [json.dumps(row) for row in fixture_rows("forget05")]
    text = "\n".join([lines[0], "", lines[1], '{"question": "broken', *lines[2:]]) + "\n"  # line 4, a blank line 2
    code, out, err = run_broken(base_model, tmp_path, capsys, raw={"forget05": text})
    assert_error(code, out, err, "forget05.jsonl, line 4: not valid JSON")


def test_line_numbers_count_only_newlines(tmp_path):
    """A JSON string may hold U+2028 unescaped: it neither splits a row nor shifts the line numbers."""
    rows = [{"question": "q\u2028one", "answer": "a\u2029b"}, {"question": "q2", "answer": "a2"}]
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    (tmp_path / "forget05.jsonl").write_text(text + "\n{oops\n")
    with pytest.raises(ValueError, match=r"forget05.jsonl, line 4: not valid JSON"):
        load_tofu("forget05", tmp_path)
    (tmp_path / "forget05.jsonl").write_text(text)
    assert load_tofu("forget05", tmp_path).to_list() == rows


def test_a_selection_past_the_end_is_refused_before_fine_tuning(base_model, tmp_path, capsys):
    code, out, err = run_broken(
        base_model, tmp_path, capsys, unlearn_data={"forget": [{"config": "forget05", "rows": [0, 99]}]}
    )
    assert_error(code, out, err, "unlearn_data.forget", "forget05[0:99]", "forget05 has 5 rows")


def test_a_training_selection_past_the_end_is_refused(base_model, tmp_path, capsys):
    models = tiny_recipe(base_model, tmp_path)["models"]
    models["retain"] = {"train_data": [{"config": "retain_perturbed", "rows": [10, 20]}]}
    code, out, err = run_broken(base_model, tmp_path, capsys, models=models)
    assert_error(code, out, err, "models.retain.train_data", "retain_perturbed[10:20]", "has 5 rows")


def test_max_items_zero_is_refused(base_model, tmp_path, capsys):
    code, out, err = run_broken(base_model, tmp_path, capsys, evaluation={"max_items": 0})
    assert_error(code, out, err, "max_items must be an integer >= 1, got 0")


def test_a_missing_answer_column_is_refused(base_model, tmp_path, capsys):
    rows = [{"question": row["question"]} for row in fixture_rows("forget05")]
    code, out, err = run_broken(base_model, tmp_path, capsys, overrides={"forget05": rows})
    assert_error(code, out, err, "forget05", "lacks column(s) ['answer']")


def test_a_missing_perturbed_column_of_an_evaluation_split_is_refused(base_model, tmp_path, capsys):
    rows = [{k: v for k, v in row.items() if k != "perturbed_answer"} for row in fixture_rows("forget05_perturbed")]
    code, out, err = run_broken(base_model, tmp_path, capsys, overrides={"forget05_perturbed": rows})
    assert_error(code, out, err, "evaluation data", "forget05_perturbed", "perturbed_answer")


def test_an_empty_forget_set_is_refused(base_model, tmp_path, capsys):
    code, out, err = run_broken(base_model, tmp_path, capsys, raw={"forget05": "\n"})
    assert_error(code, out, err, "forget05", "empty")


def test_an_empty_row_range_is_refused(base_model, tmp_path, capsys):
    code, out, err = run_broken(
        base_model, tmp_path, capsys, unlearn_data={"forget": [{"config": "forget05", "rows": [3, 3]}]}
    )
    assert_error(code, out, err, "unlearn_data.forget", "forget05[3:3]")


def test_a_retain_set_sharing_forget_questions_is_counted_never_shown(base_model, tmp_path, capsys):
    recipe = tiny_recipe(
        base_model,
        tmp_path / "out",
        unlearn_data={"forget": ["forget05"], "retain": ["retain_perturbed", {"config": "forget05", "rows": [0, 2]}]},
    )
    code, out, err = cli(["run", write(tmp_path / "r.yaml", recipe), "--dry-run"], capsys)
    assert code == 0, err
    assert "shares 2 of its 7 question(s) with the forget set" in out
    for row in fixture_rows("forget05"):
        assert row["question"] not in out + err and row["answer"] not in out + err


# ------------------------------------------------------------------------------------------------ item 9: paths, Hub


def test_a_missing_relative_model_folder_is_reported_at_once(base_model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()  # `models/nope`: one '/', like a Hub id, but models/ is a local folder
    args = ["eval", "--model", "models/nope", "--data-dir", str(FIXTURE_DIR), "--output-dir", str(tmp_path / "e")]
    code, out, err = cli(args, capsys)
    assert_error(code, out, err, "Model folder 'models/nope' does not exist", command="eval")


def test_a_missing_given_model_is_reported_before_fine_tuning(base_model, tmp_path, capsys):
    models = tiny_recipe(base_model, tmp_path)["models"]
    models["target"] = {"name_or_path": "./x"}
    code, out, err = run_broken(base_model, tmp_path, capsys, models=models)
    assert_error(code, out, err, "models.target.name_or_path", "Model folder './x' does not exist")


def test_offline_hub_data_says_to_pass_a_data_dir(base_model, tmp_path, capsys, monkeypatch, offline):
    monkeypatch.setattr(tofu_data, "TOFU_HUB_ID", "hf-unlearn-test/no-such-dataset")
    recipe = tiny_recipe(base_model, tmp_path / "out", data_dir=None)
    code, out, err = cli(["run", write(tmp_path / "r.yaml", recipe)], capsys)
    assert_error(code, out, err, "could not be loaded from the Hub", "HF_HUB_OFFLINE is set", "--data-dir")
    assert_nothing_trained(tmp_path / "out")


def test_an_offline_hub_model_says_to_pass_a_local_folder(tmp_path, capsys, offline):
    args = ["eval", "--model", MISSING_REPO, "--data-dir", str(FIXTURE_DIR), "--output-dir", str(tmp_path / "e")]
    code, out, err = cli(args, capsys)
    assert_error(
        code, out, err, MISSING_REPO, "not in the local Hugging Face cache", "local model folder", command="eval"
    )


def test_an_offline_hub_model_in_a_recipe_is_refused_before_fine_tuning(base_model, tmp_path, capsys, offline):
    models = tiny_recipe(base_model, tmp_path)["models"]
    models["target"] = {"name_or_path": MISSING_REPO}
    code, out, err = run_broken(base_model, tmp_path, capsys, models=models)
    assert_error(code, out, err, "models.target.name_or_path", "HF_HUB_OFFLINE is set", "local model folder")


def test_an_unreachable_hub_says_to_pass_a_local_folder(tmp_path, capsys, monkeypatch):
    """No network (a connection error, HF_HUB_OFFLINE unset): the same one line."""
    import transformers

    def unreachable(*args, **kwargs):
        try:
            raise ConnectionError("Max retries exceeded")
        except ConnectionError as cause:
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.") from cause

    import huggingface_hub

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", unreachable)
    # The one lookup before loading answered (the Hub went away after it): loading's own error is the one line.
    monkeypatch.setattr(huggingface_hub, "model_info", lambda name, **kwargs: None)
    args = ["eval", "--model", MISSING_REPO, "--data-dir", str(FIXTURE_DIR), "--output-dir", str(tmp_path / "e")]
    code, out, err = cli(args, capsys)
    assert_error(code, out, err, "the Hub cannot be reached", "local model folder", command="eval")


# ------------------------------------------------------------------------------------------------ item 5: fallbacks

FALLBACK = "The tokenizer has no chat template: prompts use the plain 'Question: ... Answer:' format"


def test_the_plain_format_fallback_is_stated_everywhere(plain_model, tmp_path, capsys):
    out = tmp_path / "out"
    recipe = tiny_recipe(
        plain_model,
        out,
        models={"target": {"name_or_path": str(plain_model)}, "retain": {"name_or_path": str(plain_model)}},
        finetune={},
        methods={"GA": {"max_steps": 1}},
        evaluation={"batch_size": 8, "max_new_tokens": 2, "max_items": 2},
    )
    path = write(tmp_path / "r.yaml", recipe)
    code, stdout, stderr = cli(["run", path], capsys)
    assert code == 0, stderr
    assert f"Note: {FALLBACK} and the system prompt is not used." in stderr
    for folder in ("eval/target", "eval/retain", "methods/GA/eval"):
        summary = json.loads((out / folder / "summary.json").read_text())
        assert any(FALLBACK in notice for notice in summary["notices"])
        assert summary["settings"]["system_prompt"] is None  # asked for, but not used: not recorded
        assert summary["formatting_used"] == {
            "chat_template": False,
            "system_prompt": None,
            "reference_attention_mask": False,
            "label_convention": "end_of_turn",
        }
    results = json.loads((out / "results.json").read_text())
    for metrics in (results["models"]["target"]["metrics"], results["methods"]["GA"]["metrics"]):
        assert any(FALLBACK in notice for notice in metrics["notices"])
    # A reused evaluation states it again.
    code, stdout, stderr = cli(["run", path], capsys)
    assert code == 0 and stdout.count("Reusing") + stderr.count("Reusing") >= 3
    assert f"Note: {FALLBACK}" in stderr


def test_the_fallback_is_stated_when_fine_tuning(plain_model, tmp_path, capsys):
    recipe = tiny_recipe(plain_model, tmp_path / "out", finetune={"num_train_epochs": 1, "disable_tqdm": True})
    recipe["models"]["retain"] = {"name_or_path": str(plain_model)}
    code, out, err = cli(["finetune", write(tmp_path / "r.yaml", recipe)], capsys)
    assert code == 0, err
    assert f"Note: fine-tuning: {FALLBACK}" in out


def test_a_template_tokenizer_records_its_system_prompt(base_model, tmp_path):
    from hf_unlearn.evaluation.tofu import TofuEvalArguments, evaluate_tofu
    from hf_unlearn.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(base_model)
    args = TofuEvalArguments(max_items=2, max_new_tokens=2, compute_rouge=False)
    summary = evaluate_tofu(model, tokenizer, args, data_dir=FIXTURE_DIR, show_progress=False)
    assert summary["settings"]["system_prompt"] == "You are a helpful assistant."
    assert not any("chat template" in notice for notice in summary["notices"])
    plain = evaluate_tofu(model, tokenizer, args, data_dir=FIXTURE_DIR, show_progress=False, use_chat_template=False)
    assert plain["settings"]["system_prompt"] is None
    assert any("system prompt is not used" in notice for notice in plain["notices"])


# ------------------------------------------------------------------------------------------------ item 1: Hub snapshots


def fake_hub_model(cache: Path, repo: str, commit: str, weights: bytes) -> Path:
    """A Hub cache entry as huggingface_hub lays it out: blobs named by hash, snapshot files linking to them."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    files = {"model.safetensors": (weights, hashlib.sha256(weights).hexdigest())}
    config = b'{"model_type": "llama"}'
    files["config.json"] = (config, hashlib.sha1(b"blob %d\0" % len(config) + config).hexdigest())  # git blob id
    for name, (content, blob) in files.items():
        (root / "blobs" / blob).write_bytes(content)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


def test_a_hub_model_is_keyed_by_its_cached_snapshot(tmp_path, offline, monkeypatch):
    import huggingface_hub

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    first, second = "a" * 40, "b" * 40
    fake_hub_model(cache, "org/tiny", first, b"weights one")
    identity = ModelSpec("org/tiny").identity()
    assert identity["hub_commit"] == first
    assert identity["files_sha256"]["model.safetensors"] == hashlib.sha256(b"weights one").hexdigest()
    assert identity["files_sha256"]["config.json"] == hashlib.sha256(b'{"model_type": "llama"}').hexdigest()

    # A new revision with other weights of the same size: another identity (every dependent stage recomputes).
    fake_hub_model(cache, "org/tiny", second, b"weights two")
    moved = ModelSpec("org/tiny").identity()
    assert moved["hub_commit"] == second and moved["files_sha256"] != identity["files_sha256"]

    # Not in the cache: keyed by its name (it is downloaded, then fetched before fingerprinting, when online).
    assert ModelSpec(MISSING_REPO).identity() == {
        "name_or_path": MISSING_REPO,
        "gguf_file": None,
        "dtype": "float32",
        "trust_remote_code": False,
        "adapter": None,
    }


def test_a_local_folder_is_keyed_by_its_files_not_the_spelling_of_its_path(base_model, tmp_path, monkeypatch):
    """Cached TOFU fine-tunes key their base by this: `./x`, `x`, `/abs/x` and a symlink are one model."""
    expected = {
        "gguf_file": None,
        "dtype": "float32",
        "trust_remote_code": False,
        "adapter": None,
        "files_sha256": folder_sha256(base_model),
    }
    (tmp_path / "link").symlink_to(base_model)
    monkeypatch.chdir(Path(base_model).parent)
    for spelling in (str(base_model), Path(base_model).name, f"./{Path(base_model).name}", str(tmp_path / "link")):
        assert ModelSpec(spelling).identity() == expected, spelling


# ------------------------------------------------------------------------------------------------ round 3: the user's files


def test_an_output_folder_of_the_users_own_files_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "models" / "original").mkdir(parents=True)
    (out / "models" / "original" / "model.safetensors").write_bytes(b"the user's weights")
    (out / "results.json").write_text('{"mine": 1}')
    code, _, err = run_cli(tmp_path, markov(), capsys, out=out)
    assert_one_line_error(code, err, f"The output folder {out} holds files hf-unlearn did not write (models, results")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "models", "models/original", "models/original/model.safetensors", "results.json"
    ]  # fmt: skip
    assert (out / "models" / "original" / "model.safetensors").read_bytes() == b"the user's weights"
    assert (out / "results.json").read_text() == '{"mine": 1}'


def test_a_folder_a_run_made_is_used_again_and_an_empty_one_is_taken(tmp_path, capsys):
    from hf_unlearn.runtime.io import OWNER_FILE, check_own_folder

    (tmp_path / "empty").mkdir()
    check_own_folder(tmp_path / "empty")  # nothing to lose
    check_own_folder(tmp_path / "missing")
    earlier = tmp_path / "earlier"  # a run from before the folder marker: its results.json is a run log
    earlier.mkdir()
    (earlier / "results.json").write_text(json.dumps({"stages": {}, "environment": {}, "complete": True}))
    check_own_folder(earlier)
    out = tmp_path / "out"
    assert run_cli(tmp_path, markov(), capsys, out=out)[0] == 0
    assert json.loads((out / OWNER_FILE).read_text())["written_by"] == "hf-unlearn"
    code, stdout, err = run_cli(tmp_path, markov(), capsys, out=out)
    assert code == 0, err
    assert "Reusing the cached original model" in stdout


def test_a_stage_folder_without_a_stamp_is_never_replaced(tmp_path):
    from hf_unlearn.runtime.cache import cached_stage

    stage = tmp_path / "models" / "original"
    stage.mkdir(parents=True)
    (stage / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds files hf-unlearn did not write \\(no hf_unlearn_stage.json\\)"):
        cached_stage(stage, {"a": 1}, "original model")
    assert (stage / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------------ round 3: killed saves


def checkpoint(folder: Path, step: int, state: str | None) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"x")
    if state is not None:
        (path / "trainer_state.json").write_text(state)
    return path


def test_a_checkpoint_killed_while_saving_is_skipped_and_the_one_before_resumed(tmp_path, capsys):
    from hf_unlearn.runtime.cache import resume_checkpoint

    good = checkpoint(tmp_path, 2, '{"global_step": 2}')
    checkpoint(tmp_path, 4, None)  # killed before trainer_state.json
    checkpoint(tmp_path, 6, '{"global_st')  # killed while writing it
    assert resume_checkpoint(tmp_path, "GA") == str(good)
    out = capsys.readouterr().out
    assert "checkpoint-6, checkpoint-4 of GA is incomplete (no readable trainer_state.json): skipped." in out
    assert f"Resuming GA from {good}." in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]


def test_only_incomplete_checkpoints_restart_the_stage(tmp_path, capsys):
    from hf_unlearn.runtime.cache import resume_checkpoint

    checkpoint(tmp_path, 3, None)
    assert resume_checkpoint(tmp_path, "fine-tuning") is None
    assert "checkpoint-3 of fine-tuning is incomplete" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())
    assert resume_checkpoint(tmp_path / "missing", "GA") is None


def test_a_tofu_unlearning_resumes_past_a_checkpoint_without_trainer_state(base_model, tmp_path, capsys):
    """The run killed while saving checkpoint-1 (its scratch kept, the checkpoint without trainer_state.json): the
    next run says so and finishes the stage instead of failing on every re-run."""
    out = tmp_path / "out"
    recipe = tiny_recipe(base_model, out, methods={"GA": {}})
    recipe["unlearn"] = {**recipe["unlearn"], "save_steps": 1}
    path = write(tmp_path / "r.yaml", recipe)
    assert main(["run", path]) == 0
    stage = out / "methods" / "GA" / "model"
    scratch = stage.with_name(f".{stage.name}.partial")
    stage.rename(scratch)  # as a killed run leaves it: the scratch, no finished stage
    stamp = json.loads((scratch / "hf_unlearn_stage.json").read_text())
    (scratch / "hf_unlearn_stage.json").write_text(json.dumps({"fingerprint": stamp["fingerprint"], "complete": False}))
    broken = checkpoint(scratch / "trainer", 1, None)
    capsys.readouterr()
    assert main(["run", path]) == 0
    stdout = capsys.readouterr().out
    assert "checkpoint-1 of GA is incomplete" in stdout and "starting it afresh" in stdout
    assert not broken.exists() and (stage / "model.safetensors").is_file()
    assert json.loads((out / "results.json").read_text())["stages"]["unlearn/GA"]["reused"] is False


# ------------------------------------------------------------------------------------------------ round 3: model folders


def eval_args(model, tmp_path, *extra):
    return ["eval", "--model", str(model), "--data-dir", str(FIXTURE_DIR), "--output-dir", str(tmp_path / "e"), *extra]


def test_a_truncated_safetensors_file_is_named_before_loading(base_model, tmp_path, capsys):
    import shutil

    model = tmp_path / "cut"
    shutil.copytree(base_model, model)
    weights = model / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as handle:
        handle.truncate(size - 100)
    code, out, err = cli(eval_args(model, tmp_path), capsys)
    assert_error(
        code, out, err, f"model.safetensors is truncated ({size - 100} bytes of the {size} its header describes)",
        "save or download it again", command="eval",
    )  # fmt: skip


@pytest.mark.parametrize("offline_hub", [False, True])
def test_a_folder_with_only_a_config_is_named_before_loading(base_model, tmp_path, capsys, monkeypatch, offline_hub):
    model = tmp_path / "config-only"
    model.mkdir()
    (model / "config.json").write_text((base_model / "config.json").read_text())
    if offline_hub:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = cli(eval_args(model, tmp_path), capsys)
    assert_error(code, out, err, f"Model folder '{model}' has no weights, no *.safetensors file (it holds: config.json)",
                 command="eval")  # fmt: skip


def test_a_folder_without_a_config_or_with_pickled_weights_only_is_named(base_model, tmp_path):
    from hf_unlearn.models import check_model_source

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json \\(it is empty\\)"):
        check_model_source(str(empty))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="has only pickled weights \\(pytorch_model.bin\\), which are never"):
        check_model_source(str(pickled))
    check_model_source(str(base_model))  # a complete folder passes


def test_a_missing_relative_model_is_one_hub_lookup_without_retries(tmp_path, capsys, monkeypatch):
    """`models/nope` with no `models/` here is also a valid Hub id: one lookup (no network: at once), no retries."""
    import huggingface_hub

    monkeypatch.chdir(tmp_path)
    calls = []

    def unreachable(name, **kwargs):
        calls.append(name)
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    tick = time.perf_counter()
    code, out, err = cli(["eval", "--model", "models/nope", "--output-dir", str(tmp_path / "e")], capsys)
    assert_error(code, out, err, f"Model 'models/nope': no such folder ({tmp_path / 'models' / 'nope'})",
                 "the Hub cannot be reached (ConnectionError)", command="eval")  # fmt: skip
    assert calls == ["models/nope"] and time.perf_counter() - tick < 10


def test_a_name_that_is_neither_a_folder_nor_a_hub_model(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    from hf_unlearn.models import check_model_source

    monkeypatch.chdir(tmp_path)

    def missing(name, **kwargs):
        error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)  # as the Hub answers 404 (no response here)
        Exception.__init__(error, "404 Client Error: Repository Not Found")
        raise error

    monkeypatch.setattr(huggingface_hub, "model_info", missing)
    with pytest.raises(FileNotFoundError, match="no such folder .*, and no model of that name on the Hub"):
        check_model_source("models/nope")


# ------------------------------------------------------------------------------------------------ round 3: silent cuts


def test_truncation_notice_counts_the_rows_cut():
    from hf_unlearn.data.chat import truncation_notice

    data = Dataset.from_dict({"input_ids": [[1] * 5, [1] * 12, [1] * 9, [1] * 8]})
    assert truncation_notice(data, 8, "fine-tuning") == (
        "Warning: 2 of the 4 fine-tuning rows are longer than max_length=8 tokens (the longest has 12): they are "
        "truncated to 8, so their ends are not trained on. Raise max_length to keep them whole."
    )
    masks = [[0] * 3 + [1] * 2, [0] * 10 + [1] * 2, [0] * 7 + [1] * 2, [0] * 6 + [1] * 2]  # row 1's answer is past 8
    assert "truncated to 8, so their ends are not trained on; 1 of them lose every target token and are dropped." in (
        truncation_notice(data.add_column("completion_mask", masks), 8, "fine-tuning")
    )
    assert truncation_notice(data, 12, "fine-tuning") is None and truncation_notice(data, None, "x") is None


def test_fine_tuning_says_how_many_rows_it_truncates(base_model, tmp_path, capsys):
    from hf_unlearn.data.tofu import TofuFormat
    from hf_unlearn.tasks.tofu.finetune import sft_dataset

    recipe = tiny_recipe(base_model, tmp_path / "out")
    recipe["finetune"] = {**recipe["finetune"], "max_length": 150, "num_train_epochs": 1}
    recipe["models"]["retain"] = {"name_or_path": str(base_model)}
    rows = Dataset.from_list([*fixture_rows("retain_perturbed"), *fixture_rows("forget05")])
    lengths = [len(ids) for ids in sft_dataset(rows, make_tokenizer(), TofuFormat())["input_ids"]]
    long = [n for n in lengths if n > 150]
    assert 0 < len(long) < len(lengths)  # some rows are longer than 150 tokens
    assert main(["finetune", write(tmp_path / "r.yaml", recipe)]) == 0
    assert (
        f"Warning: {len(long)} of the {len(lengths)} fine-tuning rows are longer than finetune.max_length=150 tokens "
        f"(the longest has {max(long)}): they are truncated to 150, so their ends are not trained on. Raise"
        in capsys.readouterr().out
    )


# ------------------------------------------------------------------------------------------------ round 3: TOFU references


def test_a_holdout_split_that_repeats_the_forget_questions_is_refused(base_model, tmp_path, capsys):
    data = write_fixture(tmp_path / "data", {"holdout05": fixture_rows("forget05")[:3]})
    args = ["eval", "--model", str(base_model), "--data-dir", str(data), "--output-dir", str(tmp_path / "e")]
    code, out, err = cli(args, capsys)
    assert_error(
        code, out, err, "The holdout split (holdout05) repeats 3 of its 3 questions from the forget split "
        "(forget05_perturbed): the MIAs would compare forget questions with themselves", command="eval",
    )  # fmt: skip
    assert not (tmp_path / "e" / "summary.json").exists()


def test_retain_results_of_other_items_are_refused(base_model, tmp_path, capsys):
    common = ["--model", str(base_model), "--data-dir", str(FIXTURE_DIR), "--no-compute-rouge", "--quiet"]
    assert main(["eval", *common, "--output-dir", str(tmp_path / "retain"), "--max-items", "2"]) == 0
    capsys.readouterr()
    args = ["eval", *common, "--output-dir", str(tmp_path / "e"), "--max-items", "3"]
    code, out, err = cli([*args, "--retain-results", str(tmp_path / "retain")], capsys)
    assert_error(code, out, err, "were computed on other forget items: 1 of the 3 questions evaluated now are not "
                 "among its 2", command="eval")  # fmt: skip
    assert not (tmp_path / "e" / "summary.json").exists()
    # Same count, other questions (items.json edited as if evaluated on other data): refused too.
    items_path = tmp_path / "retain" / "items.json"
    items = json.loads(items_path.read_text())
    items["splits"]["forget"][1]["question"] = "Who wrote something else?"
    items_path.write_text(json.dumps(items))
    args[-1] = "2"
    code, out, err = cli([*args, "--retain-results", str(tmp_path / "retain")], capsys)
    assert_error(code, out, err, "were computed on other forget items: 1 of the 2 questions evaluated now are not "
                 "among its 2", command="eval")  # fmt: skip
    items["splits"]["forget"][1]["question"] = fixture_rows("forget05_perturbed")[1]["question"]
    items_path.write_text(json.dumps(items))
    assert main([*args, "--retain-results", str(tmp_path / "retain")]) == 0  # the same items: forget_quality given
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["forget_quality"] is not None


def test_a_subset_of_the_retain_items_reads_its_own_values():
    from hf_unlearn.evaluation.tofu.retain import RetainReference, select_retain_items

    reference = RetainReference([0.1, 0.2, 0.3], 0.5, "r", "sha", ("a", "b", "c"))
    picked = select_retain_items(reference, [{"question": "c"}, {"question": "a"}])
    assert picked.truth_ratios == [0.3, 0.1] and picked.forget_questions == ("c", "a")
    by_index = RetainReference([0.1, 0.2, 0.3], 0.5, "open-unlearning", "sha")  # no questions: TOFU order
    assert select_retain_items(by_index, [{"question": "x"}, {"question": "y"}]).truth_ratios == [0.1, 0.2]
    with pytest.raises(ValueError, match=r"hold truth ratios of 3 forget item\(s\), this evaluation has 4"):
        select_retain_items(by_index, [{"question": str(i)} for i in range(4)])


# ------------------------------------------------------------------------------------------------ round 3: paths, disks


def test_a_recipe_path_that_is_a_folder_is_named(tmp_path, capsys):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "a.yaml").write_text(yaml.safe_dump(markov()))
    code, out, err = cli(["run", str(tmp_path / "recipes")], capsys)
    assert_error(code, out, err, f"Recipe '{tmp_path / 'recipes'}' is a folder, not a recipe file: pass a .yaml file "
                 f"(recipes in it: {tmp_path / 'recipes' / 'a.yaml'})")  # fmt: skip


def test_a_full_disk_while_saving_the_tokenizer_is_one_line(base_model, tmp_path, capsys, monkeypatch):
    """The tokenizers library writes tokenizer.json itself and reports a full disk as a plain Exception."""
    from transformers import PreTrainedTokenizerFast

    from hf_unlearn.models import save_tokenizer

    def full_disk(self, *args, **kwargs):
        raise Exception("No space left on device (os error 28)")

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", full_disk)
    with pytest.raises(OSError) as raised:
        save_tokenizer(make_tokenizer(), tmp_path / "t")
    assert raised.value.errno == 28
    recipe = tiny_recipe(base_model, tmp_path / "out")
    recipe["models"]["retain"] = {"name_or_path": str(base_model)}
    recipe["finetune"] = {**recipe["finetune"], "num_train_epochs": 1}
    code, out, err = cli(["finetune", write(tmp_path / "r.yaml", recipe)], capsys)
    assert_error(code, out, err, "[Errno 28] Saving the tokenizer to", "failed: No space left on device",
                 command="finetune")  # fmt: skip
    assert not (tmp_path / "out" / "models" / "target").exists()  # no half-saved model claims to be done


def test_the_evaluation_callback_example_is_small_by_default():
    """Its evaluations once ran every TOFU item (217 s on a 3M model): by default they read the first 20 items of
    each split, teacher-forced only (the example's own test passes smaller numbers, so it checks the defaults here)."""
    import ast

    source = (Path(__file__).parents[1] / "examples" / "eval_callback_best_checkpoint.py").read_text()
    tree = ast.parse(source)
    defaults = {
        node.target.id: call.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(node.value, ast.Call)
        for call in node.value.keywords
        if call.arg == "default" and isinstance(call.value, ast.Constant)
    }
    assert defaults["max_eval_items"] == 20
    assert "max_items=limit" in source and "compute_rouge=False" in source
