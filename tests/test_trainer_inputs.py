"""What a TRL user hands the trainers: text datasets in every TRL form, a model path, `train_dataset=`; and the console
output (method-labelled lines, no pin-memory warning on CPU)."""

import warnings

import pytest
import torch
from datasets import Dataset

from hf_unlearn import GAConfig, GATrainer, NPOConfig, NPOTrainer
from hf_unlearn.data.chat import encode_prompt_answer, tokenize_dataset
from hf_unlearn.utils import IGNORE_INDEX

from .tofu_helpers import make_model, make_tokenizer, save_tiny_model

QA = [
    {"question": "Who wrote the Red Atlas?", "answer": "Mira Holt wrote it in 1988."},
    {"question": "Where was Mira Holt born?", "answer": "In a small port town."},
]
SYSTEM = [{"role": "system", "content": "Be brief."}]
FORMS = {
    "question/answer": QA,
    "messages": [
        {"messages": [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}]}
        for r in QA
    ],
    "conversational prompt/completion": [
        {
            "prompt": [{"role": "user", "content": r["question"]}],
            "completion": [{"role": "assistant", "content": r["answer"]}],
        }
        for r in QA
    ],
}
COMMON = {"per_device_train_batch_size": 2, "report_to": "none", "save_strategy": "no", "disable_tqdm": True}


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.mark.parametrize("form", list(FORMS))
def test_text_datasets_are_tokenized_with_the_chat_template(form, tokenizer, tmp_path):
    trainer = GATrainer(
        make_model(tokenizer),
        GAConfig(output_dir=str(tmp_path), **COMMON),
        forget_dataset=Dataset.from_list(FORMS[form]),
        processing_class=tokenizer,
    )
    for row, example in zip(QA, trainer.forget_dataset):
        # Neutral default: no system prompt of ours, the template's own rendering; labels on the answer only.
        prompt_ids, answer_ids = encode_prompt_answer(tokenizer, row["question"], row["answer"])
        assert example["input_ids"] == prompt_ids + answer_ids
        assert example["labels"] == [IGNORE_INDEX] * len(prompt_ids) + answer_ids
        assert tokenizer.decode(answer_ids) == row["answer"] + "<|im_end|>"
        assert "You are a helpful assistant" not in tokenizer.decode(example["input_ids"])


def test_plain_prompt_completion_and_dataset_kwargs(tokenizer, tmp_path):
    plain = Dataset.from_list([{"prompt": "The capital of France is", "completion": " Paris."}])
    trainer = GATrainer(
        make_model(tokenizer),
        GAConfig(output_dir=str(tmp_path), **COMMON),
        forget_dataset=plain,
        processing_class=tokenizer,
    )
    example = trainer.forget_dataset[0]
    answer = [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX]
    assert tokenizer.decode(answer) == " Paris.<|im_end|>"  # raw text, no template, eos appended (as TRL does)
    args = GAConfig(output_dir=str(tmp_path), dataset_kwargs={"system_prompt": "Be brief."}, **COMMON)
    trainer = GATrainer(make_model(tokenizer), args, forget_dataset=Dataset.from_list(QA), processing_class=tokenizer)
    assert trainer.forget_dataset[0] == tokenize_dataset(Dataset.from_list(QA), tokenizer, system_prompt="Be brief.")[0]
    messages = [{"messages": SYSTEM + FORMS["messages"][0]["messages"]}]
    trainer = GATrainer(
        make_model(tokenizer), args, forget_dataset=Dataset.from_list(messages), processing_class=tokenizer
    )
    assert (
        trainer.forget_dataset[0]
        == tokenize_dataset(Dataset.from_list(QA[:1]), tokenizer, system_prompt="Be brief.")[0]
    )
    skip = GAConfig(output_dir=str(tmp_path), dataset_kwargs={"skip_prepare_dataset": True}, **COMMON)
    with pytest.raises(ValueError, match="missing column"):
        GATrainer(make_model(tokenizer), skip, forget_dataset=Dataset.from_list(QA), processing_class=tokenizer)


def test_retain_and_eval_datasets_are_tokenized_too(tokenizer, tmp_path):
    args = NPOConfig(output_dir=str(tmp_path), **COMMON)
    text = Dataset.from_list(QA)
    trainer = NPOTrainer(
        make_model(tokenizer),
        args,
        forget_dataset=text,
        retain_dataset=Dataset.from_list(FORMS["messages"]),
        eval_dataset={"forget": text, "holdout": Dataset.from_list(FORMS["conversational prompt/completion"])},
        processing_class=tokenizer,
    )
    metrics = trainer.evaluate()
    assert metrics["eval_forget_loss"] == pytest.approx(metrics["eval_holdout_loss"], rel=1e-6)  # same pairs


def test_model_as_a_path_loads_model_and_tokenizer(tmp_path):
    folder = save_tiny_model(tmp_path / "tiny")
    args = GAConfig(output_dir=str(tmp_path / "out"), max_steps=1, model_init_kwargs={"dtype": "float32"}, **COMMON)
    trainer = GATrainer(str(folder), args, forget_dataset=Dataset.from_list(QA))
    assert trainer.processing_class.eos_token == "<|im_end|>"
    assert trainer.model.dtype == torch.float32
    trainer.train()


def test_train_dataset_and_text_without_tokenizer_fail_clearly(tokenizer, tmp_path):
    args = GAConfig(output_dir=str(tmp_path), **COMMON)
    model = make_model(tokenizer)
    with pytest.raises(TypeError, match="got train_dataset=.*forget_dataset="):
        GATrainer(model, args, train_dataset=Dataset.from_list(QA), processing_class=tokenizer)
    with pytest.raises(TypeError, match="no forget_dataset"):
        GATrainer(model, args, processing_class=tokenizer)
    with pytest.raises(ValueError, match="text columns.*processing_class"):
        GATrainer(model, args, forget_dataset=Dataset.from_list(QA))
    with pytest.raises(ValueError, match="Unsupported columns"):
        GATrainer(model, args, forget_dataset=Dataset.from_list([{"body": "a"}]), processing_class=tokenizer)
    # Plain-text rows (`text`) are chunked (tests/test_muse_task.py); without a tokenizer they fail in one line.
    with pytest.raises(ValueError, match="plain text: pass processing_class"):
        GATrainer(model, args, forget_dataset=Dataset.from_list([{"text": "a"}]))


def test_console_lines_name_the_method_and_cpu_does_not_pin(tokenizer, tmp_path, capsys):
    args = NPOConfig(output_dir=str(tmp_path), max_steps=2, logging_steps=1, retain_loss="none", **COMMON)
    assert args.dataloader_pin_memory is (torch.cuda.is_available() or torch.accelerator.is_available())
    assert NPOConfig(output_dir=str(tmp_path), dataloader_pin_memory=True).dataloader_pin_memory is True
    trainer = NPOTrainer(make_model(tokenizer), args, forget_dataset=Dataset.from_list(QA), processing_class=tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pin_memory (or any other) warning from our defaults
        trainer.train()
        trainer.evaluate()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines and all(line.startswith("[NPO] {") for line in lines)
    assert not any("per_second" in line for line in lines)
    assert any("'forget_nll'" in line for line in lines) and any("'eval_forget_loss'" in line for line in lines)
    # The logged metric names are untouched.
    assert "forget_nll" in trainer.state.log_history[0] and not any("NPO" in k for k in trainer.state.log_history[0])


def test_progress_bars_are_labelled(tokenizer, tmp_path, capsys):
    args = NPOConfig(output_dir=str(tmp_path), max_steps=2, logging_steps=1, retain_loss="none", **COMMON)
    args.disable_tqdm = False
    trainer = NPOTrainer(make_model(tokenizer), args, forget_dataset=Dataset.from_list(QA), processing_class=tokenizer)
    trainer.train()
    trainer.evaluate()
    out, err = capsys.readouterr()
    assert "NPO: " in err and "NPO eval: " in err
    lines = [line.strip() for line in out.splitlines() if "{" in line]
    assert lines and all(line.startswith("[NPO] {") for line in lines)


def test_every_config_parses_from_the_command_line(monkeypatch):
    from transformers import HfArgumentParser

    from hf_unlearn import METHODS
    from hf_unlearn.trainers import base_config

    monkeypatch.setattr(base_config, "check_report_to", lambda report_to: None)  # tensorboard may not be installed

    for config_class, _ in METHODS.values():
        HfArgumentParser(config_class)  # report_to's type once made this fail
    argv = ["--output_dir", "x", "--dataset_kwargs", '{"system_prompt": "Be brief."}', "--report_to", "tensorboard"]
    (args,) = HfArgumentParser(NPOConfig).parse_args_into_dataclasses(argv)
    assert args.dataset_kwargs == {"system_prompt": "Be brief."} and args.report_to == ["tensorboard"]
    with pytest.raises(ValueError, match="model_init_kwargs must be a dict or a JSON object"):
        NPOConfig(output_dir="x", model_init_kwargs="{dtype: bf16}")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda rows: torch.zeros(2, 5, dtype=torch.long), r"forget dataset is a Tensor of shape \(2, 5\): give rows"),
        (lambda rows: {"train": rows}, r"forget dataset is a dict with the splits \['train'\]: pass one split"),
        (lambda rows: rows.to_iterable_dataset(), "forget dataset is an IterableDataset: unlearning needs random"),
        (lambda rows: [1, 2], "forget dataset is a list but not a non-empty list of dict rows"),
        (lambda rows: 7, "forget dataset is of type int"),
    ],
)
def test_what_is_not_rows_is_refused_in_one_line(make, message, tokenizer, tmp_path):
    from datasets import DatasetDict

    rows = Dataset.from_list(QA)
    with pytest.raises(TypeError, match=message):
        GATrainer(make_model(tokenizer), GAConfig(output_dir=str(tmp_path), **COMMON), forget_dataset=make(rows),
                  processing_class=tokenizer)  # fmt: skip
    with pytest.raises(TypeError, match=r"is a DatasetDict with the splits \['train'\]: pass one split"):
        GATrainer(make_model(tokenizer), GAConfig(output_dir=str(tmp_path), **COMMON),
                  forget_dataset=DatasetDict({"train": rows}), processing_class=tokenizer)  # fmt: skip


def test_a_list_of_dict_rows_is_a_dataset(tokenizer, tmp_path):
    trainer = GATrainer(
        make_model(tokenizer),
        GAConfig(output_dir=str(tmp_path), **COMMON),
        forget_dataset=QA,
        processing_class=tokenizer,
    )
    assert len(trainer.forget_dataset) == 2 and "input_ids" in trainer.forget_dataset.column_names


def test_padding_gives_trls_ids():
    from trl.trainer.utils import pad

    from hf_unlearn.data.pairing import pad_examples

    rows = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8], "attention_mask": [1]}]
    batch = pad_examples(rows, pad_token_id=3)
    as_tensors = lambda key: [torch.tensor(row.get(key, [1] * len(row["input_ids"]))) for row in rows]
    assert torch.equal(batch["input_ids"], pad(as_tensors("input_ids"), padding_value=3))
    assert torch.equal(batch["labels"], pad(as_tensors("labels"), padding_value=IGNORE_INDEX))
    assert torch.equal(batch["attention_mask"], pad(as_tensors("attention_mask"), padding_value=0))
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 3, 3]]
