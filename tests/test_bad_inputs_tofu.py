"""Bad TOFU inputs fail at once with one clear line (exit code 2, no traceback), before anything is fine-tuned or
evaluated; fallbacks that change the metric are stated in the log, summary.json and results.json; Hub models are keyed
by their cached snapshot. Tiny models, local fixture data, never the network (HF_HUB_OFFLINE and made-up repo ids)."""

import hashlib
import json
from pathlib import Path

import pytest

from hf_unlearn.cli import main
from hf_unlearn.runtime.hashing import folder_sha256
from hf_unlearn.tasks.tofu import data as tofu_data
from hf_unlearn.tasks.tofu.data import load_tofu
from hf_unlearn.tasks.tofu.recipe import ModelSpec

from .test_tofu_pipeline import tiny_recipe, write
from .tofu_helpers import FIXTURE_DIR, fixture_rows, make_model, make_tokenizer, save_tiny_model, write_fixture

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

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", unreachable)
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
    from hf_unlearn.models import load_model_and_tokenizer
    from hf_unlearn.tasks.tofu.evaluation import TofuEvalArguments, evaluate_tofu

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


def test_a_local_folder_identity_is_unchanged(base_model):
    """Cached TOFU fine-tunes key their base by this: it must stay exactly as it was."""
    assert ModelSpec(str(base_model)).identity() == {
        "name_or_path": str(base_model),
        "gguf_file": None,
        "dtype": "float32",
        "trust_remote_code": False,
        "adapter": None,
        "files_sha256": folder_sha256(base_model),
    }
