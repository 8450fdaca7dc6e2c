"""Bad input fails early with one clear line, and no run silently does nothing or reuses a stale result.

Each CLI case asserts the exit code, that the message names the problem, and that no traceback reaches the user;
each API case asserts the exception type and that its message names the field. Tiny models only.
"""

import copy
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
from hf_unlearn.runtime import io as runtime_io
from hf_unlearn.runtime.lock import LOCK_FILE
from hf_unlearn.tasks.markov import pipeline as markov_pipeline
from hf_unlearn.trainers import GAConfig, GATrainer, IMUConfig, IMUTrainer

from .test_cli import TINY

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
        ({"train": {"learning_rat": 1e-3}}, ["Unknown key(s) in train", "did you mean 'learning_rate'"]),
        ({"evaluation": {"batch_size": 0}}, ["batch_size must be >= 1"]),
    ],
    ids=lambda value: None if isinstance(value, dict) else "",
)
def test_bad_markov_recipe_values_fail_before_anything_trains(tmp_path, capsys, change, fragments):
    code, _, err = run_cli(tmp_path, markov(**change), capsys)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "out" / "models").exists()  # nothing was trained


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

    def interrupted(recipe, output_dir):
        raise KeyboardInterrupt

    monkeypatch.setattr(markov_pipeline, "_run_markov", interrupted)
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
