"""What the trainers label, against TRL's SFTTrainer and transformers' assistant mask on the same rows: the token ids
are TRL's up to the end-of-turn token; `label_scope="answer"` (default) labels the answer and its end-of-turn token,
`label_scope="conversation"` every token, as SFTTrainer does for `messages`. These tests pin why the prompt/answer
split stays ours: the libraries' ways give other ids (the template's text after the end-of-turn token) or none (no
`{% generation %}` markers in the usual chat templates)."""

import pytest
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from hf_unlearn.data.chat import tokenize_dataset
from hf_unlearn.utils import IGNORE_INDEX

from .tofu_helpers import make_model, make_tokenizer

MESSAGES = [{"role": "user", "content": "Who wrote the book?"}, {"role": "assistant", "content": "Basil Mahfouz."}]


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def trl_rows(tokenizer, rows, tmp_path):
    args = SFTConfig(output_dir=str(tmp_path), report_to="none", max_length=None, bf16=False, use_cpu=True)
    trainer = SFTTrainer(
        make_model(tokenizer), args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    return trainer.train_dataset[0]


def test_conversation_labels_are_sfttrainers_up_to_the_end_of_turn(tokenizer, tmp_path):
    trl = trl_rows(tokenizer, [{"messages": MESSAGES}], tmp_path)
    ours = tokenize_dataset(Dataset.from_list([{"messages": MESSAGES}]), tokenizer, label_scope="conversation")[0]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    # TRL: the whole rendered conversation, every token labelled, the template's newline after <|im_end|> included.
    assert trl["labels"] == trl["input_ids"]
    assert trl["input_ids"][-2] == end and tokenizer.decode(trl["input_ids"][-1:]) == "\n"
    assert ours["input_ids"] == trl["input_ids"][:-1] and ours["labels"] == ours["input_ids"]


def test_answer_labels_are_sfttrainers_completion_without_the_trailing_newline(tokenizer, tmp_path):
    row = {"prompt": MESSAGES[:1], "completion": MESSAGES[1:]}
    trl = trl_rows(tokenizer, [row], tmp_path)
    ours = tokenize_dataset(Dataset.from_list([row]), tokenizer)[0]  # label_scope="answer"
    trl_targets = [t for t in trl["labels"] if t != IGNORE_INDEX]
    our_targets = [t for t in ours["labels"] if t != IGNORE_INDEX]
    assert our_targets == trl_targets[:-1] and tokenizer.decode(trl_targets[-1:]) == "\n"
    assert tokenizer.decode(our_targets) == "Basil Mahfouz.<|im_end|>"
    # The same for a `messages` row: its last message is the answer (TRL would label the whole conversation).
    messages = tokenize_dataset(Dataset.from_list([{"messages": MESSAGES}]), tokenizer)[0]
    assert messages["labels"] == ours["labels"]


def test_the_assistant_mask_of_transformers_needs_generation_markers(tokenizer):
    """`return_assistant_tokens_mask` marks nothing on a template without `{% generation %}` (SmolLM2's and Llama
    3.2's have none): it cannot split prompt and answer for the models the toolkit runs."""
    encoded = tokenizer.apply_chat_template(
        MESSAGES, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert sum(encoded["assistant_masks"]) == 0


def test_an_unknown_label_scope_is_refused(tokenizer):
    with pytest.raises(ValueError, match="label_scope must be one of \\['answer', 'conversation'\\]"):
        tokenize_dataset(Dataset.from_list([{"messages": MESSAGES}]), tokenizer, label_scope="all")
