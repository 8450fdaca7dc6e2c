"""TOFU loading and chat formatting (docs/metrics.md#formatting): labels = answer + end-of-turn token only."""

import json

import pytest
from datasets import Dataset

from hf_unlearn.data.chat import chat_format_notice, end_of_turn_token_id, format_qa, tokenize_dataset
from hf_unlearn.data.tofu import TofuFormat, load_tofu
from hf_unlearn.utils import IGNORE_INDEX

from .tofu_helpers import CHATML, FIXTURE_DIR, NO_SYSTEM, make_tokenizer

TOFU = TofuFormat().chat_format().kwargs()  # the reference's formatting: system prompt and date_string
DEFAULT_SYSTEM_PROMPT = TofuFormat().system_prompt


def targets(tokenizer, example):
    return tokenizer.decode([t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX])


def test_load_local_config_and_clear_errors(tmp_path):
    forget = load_tofu("forget05_perturbed", FIXTURE_DIR)
    assert len(forget) == 5
    assert isinstance(forget[0]["perturbed_answer"], list)
    with pytest.raises(FileNotFoundError, match="'forget10'.*configs there"):
        load_tofu("forget10", FIXTURE_DIR)
    with pytest.raises(ValueError, match="Unknown TOFU config 'forget07'"):
        load_tofu("forget07")  # checked before any Hub access
    (tmp_path / "holdout05.jsonl").write_text("")
    with pytest.raises(ValueError, match="no rows"):
        load_tofu("holdout05", tmp_path)
    # A JSON array file works too.
    (tmp_path / "full.json").write_text(json.dumps([{"question": "q", "answer": "a"}]))
    assert load_tofu("full", tmp_path)[0] == {"question": "q", "answer": "a"}


def test_chat_format_labels_answer_and_end_of_turn_only():
    tokenizer = make_tokenizer()
    example = format_qa(tokenizer, "Who wrote it?", "Hina Ameen wrote it.", **TOFU)
    text = tokenizer.decode(example["input_ids"])
    assert text == (
        "<|im_start|>system\nToday Date: 10 Apr 2025\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWho wrote it?<|im_end|>\n<|im_start|>assistant\nHina Ameen wrote it.<|im_end|>"
    )  # the template's trailing newline after <|im_end|> is not part of the sequence
    assert targets(tokenizer, example) == "Hina Ameen wrote it.<|im_end|>"
    assert example["attention_mask"] == [1] * len(example["input_ids"])
    assert end_of_turn_token_id(tokenizer, **TOFU) == tokenizer.convert_tokens_to_ids("<|im_end|>")
    # Prompt tokens are exactly what generation sees (add_generation_prompt=True).
    n_prompt = example["labels"].count(IGNORE_INDEX)
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": "Who wrote it?"}],
        tokenize=False,
        add_generation_prompt=True,
        date_string="10 Apr 2025",
    )
    assert tokenizer.decode(example["input_ids"][:n_prompt]) == prompt


def test_template_options():
    tokenizer = make_tokenizer()
    custom = format_qa(tokenizer, "Q?", "A.", system_prompt="Be brief.", template_kwargs={"date_string": "1 Jan 2020"})
    assert "Today Date: 1 Jan 2020\nBe brief." in tokenizer.decode(custom["input_ids"])
    no_system = format_qa(tokenizer, "Q?", "A.", system_prompt=None)
    assert "Default system." in tokenizer.decode(no_system["input_ids"])  # the template's own default
    neutral = format_qa(tokenizer, "Q?", "A.")  # library defaults: no system prompt, no template variables
    assert neutral == no_system and "Today Date" not in tokenizer.decode(neutral["input_ids"])
    # A template without date_string and without system support: the variable is not passed; a clear error for system.
    strict = make_tokenizer(NO_SYSTEM)
    with pytest.raises(ValueError, match="system_prompt=None"):
        format_qa(strict, "Q?", "A.", **TOFU)
    example = format_qa(strict, "Q?", "A.", system_prompt=None, template_kwargs={"date_string": "x", "unused": 1})
    assert targets(strict, example) == "A.<|im_end|>"


def test_plain_text_fallback_without_chat_template():
    tokenizer = make_tokenizer(chat_template=None)
    example = format_qa(tokenizer, "Who wrote it?", "Hina Ameen.", **TOFU)
    assert tokenizer.decode(example["input_ids"]) == "Question: Who wrote it?\nAnswer: Hina Ameen.<|im_end|>"
    assert targets(tokenizer, example) == " Hina Ameen.<|im_end|>"
    with pytest.raises(ValueError, match="no chat template"):
        format_qa(tokenizer, "Q?", "A.", use_chat_template=True)
    # A template tokenizer can be forced to plain text.
    forced = format_qa(make_tokenizer(), "Q?", "A.", use_chat_template=False)
    assert make_tokenizer().decode(forced["input_ids"]).startswith("Question: Q?")
    # The fallback is stated, including that the system prompt went unused.
    notice = chat_format_notice(tokenizer, TofuFormat().chat_format())
    assert "no chat template" in notice and "system prompt is not used" in notice
    assert chat_format_notice(make_tokenizer(), TofuFormat().chat_format()) is None


def test_reference_attention_mask_hides_every_end_of_turn_when_pad_is_eos():
    tokenizer = make_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token  # as the reference does
    example = format_qa(tokenizer, "Q?", "A.", **{**TOFU, "reference_attention_mask": True})
    eot = tokenizer.eos_token_id
    hidden = [i for i, m in enumerate(example["attention_mask"]) if m == 0]
    assert hidden == [i for i, t in enumerate(example["input_ids"]) if t == eot]
    assert len(hidden) == 3  # system, user and the answer's end-of-turn


def test_tokenize_dataset_accepts_qa_prompt_completion_and_conversational():
    tokenizer = make_tokenizer()
    qa = tokenize_dataset(load_tofu("forget05", FIXTURE_DIR), tokenizer, **TOFU)
    assert qa.column_names == ["input_ids", "labels", "attention_mask"]
    assert targets(tokenizer, qa[0]) == "The author's name is Hina Ameen.<|im_end|>"

    conversational = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": "Q?"}], "completion": [{"role": "assistant", "content": "A."}]}]
    )
    messages = Dataset.from_list(
        [
            {
                "messages": [
                    {"role": "system", "content": "Own system."},
                    {"role": "user", "content": "Q?"},
                    {"role": "assistant", "content": "A."},
                ]
            }
        ]
    )
    reference = format_qa(tokenizer, "Q?", "A.", **TOFU)
    assert tokenize_dataset(conversational, tokenizer, **TOFU)[0] == reference
    own = tokenize_dataset(messages, tokenizer, **TOFU)[0]
    assert "Own system." in tokenizer.decode(own["input_ids"]) and DEFAULT_SYSTEM_PROMPT not in tokenizer.decode(
        own["input_ids"]
    )
    assert targets(tokenizer, own) == "A.<|im_end|>"

    # TRL's standard prompt/completion is raw text (no template), completion + eos as targets.
    standard = tokenize_dataset(Dataset.from_list([{"prompt": "The sky is", "completion": " blue."}]), tokenizer)[0]
    assert tokenizer.decode(standard["input_ids"]) == "The sky is blue.<|im_end|>"
    assert targets(tokenizer, standard) == " blue.<|im_end|>"
    # Custom column names.
    renamed = Dataset.from_list([{"q": "Q?", "a": "A."}])
    assert tokenize_dataset(renamed, tokenizer, question_key="q", answer_key="a", **TOFU)[0] == reference


def test_tokenize_dataset_bad_input():
    tokenizer = make_tokenizer()
    with pytest.raises(ValueError, match="Unsupported columns"):
        tokenize_dataset(Dataset.from_list([{"text": "hello"}]), tokenizer)
    with pytest.raises(ValueError, match="empty dataset"):
        tokenize_dataset(Dataset.from_list([]), tokenizer)
    with pytest.raises(ValueError, match="must be a string"):
        tokenize_dataset(Dataset.from_list([{"question": "Q?", "answer": ["a", "b"]}]), tokenizer)
    with pytest.raises(ValueError, match="non-empty"):
        format_qa(tokenizer, "Q?", "   ")
    with pytest.raises(ValueError, match="last message"):
        tokenize_dataset(Dataset.from_list([{"messages": [{"role": "user", "content": "Q?"}]}]), tokenizer)


def test_fixture_chat_template_is_the_one_under_test():
    assert make_tokenizer().chat_template == CHATML


def test_hub_loading_path(monkeypatch):
    calls = []
    monkeypatch.setattr("datasets.load_dataset", lambda *args, **kwargs: calls.append((args, kwargs)) or "ds")
    assert load_tofu("forget05") == "ds"
    assert calls == [(("locuslab/TOFU", "forget05"), {"split": "train"})]
