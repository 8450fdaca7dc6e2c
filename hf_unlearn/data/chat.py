"""Question/answer pairs as chat-formatted `input_ids`/`labels`, with the labels on the answer tokens only.

The tokenizer's chat template renders the conversation; the labels are -100 on every prompt and template token and
the targets are the answer tokens plus the template's end-of-turn token (`docs/metrics.md#formatting`). The
`"reference"` label convention instead tokenizes the whole rendered conversation, appends eos when it does not end
with it, and labels everything after the generation prompt (`docs/metrics.md#label-convention`). Tokenizers
without a chat template fall back to plain text ("Question: ...\nAnswer: ..." + eos); the fallback is reported by
`chat_format_notice` so that callers can say which formatting produced their numbers.

Defaults are neutral (no system prompt, no template variables); a benchmark sets its own (TOFU: `TOFU_FORMAT`).

>>> format_qa(tokenizer, "Who wrote Hamlet?", "Shakespeare.")  # doctest: +SKIP
{'input_ids': [...], 'labels': [-100, ..., 123, 45, 2], 'attention_mask': [1, ...]}
>>> tokenize_dataset(dataset, tokenizer, system_prompt="You are a helpful assistant.")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2
from datasets import Dataset, DatasetDict, IterableDataset
from torch.utils.data import IterableDataset as TorchIterableDataset

from ..utils import IGNORE_INDEX
from .pairing import validate_lm_dataset
from .text import chunk_text_dataset, is_text_dataset

__all__ = [
    "LABEL_CONVENTIONS",
    "LABEL_SCOPES",
    "PLAIN_PROMPT",
    "ChatFormat",
    "chat_format_notice",
    "encode_prompt",
    "encode_prompt_answer",
    "end_of_turn_token_id",
    "format_qa",
    "prepare_lm_dataset",
    "reference_mask",
    "tokenize_dataset",
    "truncation_notice",
]

# Plain-text fallback for tokenizers without a chat template. The answer starts with a space so that a BPE tokenizer
# splits prompt and answer exactly as it would in one string.
PLAIN_PROMPT = "Question: {question}\nAnswer:"
# Which tokens are an answer's targets: "end_of_turn" (answer + the template's end-of-turn token) or "reference" (all
# tokens after the generation prompt of the tokenized conversation, plus eos when it does not end with it).
LABEL_CONVENTIONS = ("end_of_turn", "reference")
# Which tokens of a row are labelled: the answer's (`"answer"`) or every token (`"conversation"`, TRL SFTTrainer's
# default for a `messages` dataset).
LABEL_SCOPES = ("answer", "conversation")


@dataclass
class ChatFormat:
    """How a (question, answer) pair becomes tokens; the keyword arguments of `format_qa` / `tokenize_dataset`.

    Parameters:
        system_prompt (`str` or `None`, defaults to `None`):
            Prepended as a system turn unless the prompt already starts with one; None: no system turn.
        template_kwargs (`dict`, defaults to `{}`):
            Extra chat-template variables (e.g. Llama 3's `date_string`); only those the template mentions are passed.
        use_chat_template (`bool` or `None`, defaults to `None`):
            None: the chat template when the tokenizer has one, else the plain-text format; True requires one;
            False: always plain text.
        reference_attention_mask (`bool`, defaults to `False`):
            Attention mask `input_ids != pad_token_id`, as the TOFU reference builds it (with pad = eos it hides the
            template's own end-of-turn tokens; `docs/metrics.md#reference-quirks`). Default: all ones.
        label_convention (`str`, defaults to `"end_of_turn"`):
            `"end_of_turn"`: the targets are the answer and the template's end-of-turn token. `"reference"`: the
            TOFU reference's tokenization, everything after the generation prompt in the tokenized conversation with
            eos appended (ChatML: answer + `<|im_end|>` + newline + `<|im_end|>`; `docs/metrics.md#label-convention`).
    """

    system_prompt: str | None = field(default=None, metadata={"help": "System turn prepended to every prompt."})
    template_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "Extra chat-template variables."})
    use_chat_template: bool | None = field(
        default=None, metadata={"help": "None: use the chat template if there is one; False: plain text."}
    )
    reference_attention_mask: bool = field(
        default=False, metadata={"help": "Attention mask = input_ids != pad (the TOFU reference's quirk)."}
    )
    label_convention: str = field(
        default="end_of_turn", metadata={"help": "Answer targets: 'end_of_turn' or 'reference'."}
    )

    def __post_init__(self) -> None:
        _check_convention(self.label_convention)

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `format_qa` / `tokenize_dataset` / `encode_prompt_answer`."""
        return dataclasses.asdict(self)


def chat_format_notice(tokenizer: Any, chat_format: ChatFormat) -> str | None:
    """A sentence saying how the formatting differs from what was asked (the plain-text fallback of a tokenizer
    without a chat template, a system prompt that plain text cannot carry), or None."""
    if _template_source(tokenizer) and chat_format.use_chat_template is not False:
        return None
    if chat_format.use_chat_template is False:
        if not chat_format.system_prompt:
            return None
        return "use_chat_template=False: prompts use the plain 'Question: ... Answer:' format and the system prompt is not used."
    return "The tokenizer has no chat template: prompts use the plain 'Question: ... Answer:' format" + (
        " and the system prompt is not used." if chat_format.system_prompt else "."
    )


def _check_convention(label_convention: str) -> None:
    if label_convention not in LABEL_CONVENTIONS:
        raise ValueError(f"label_convention={label_convention!r} is not one of {', '.join(LABEL_CONVENTIONS)}.")


def _template_source(tokenizer: Any) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates
        return "\n".join(template.values())
    return template or ""


def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool, kwargs: dict) -> str:
    source = _template_source(tokenizer)
    # Only pass variables the template mentions: a template that lacks `date_string` must not see it.
    usable = {key: value for key, value in kwargs.items() if key in source}
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **usable
        )
    except jinja2.TemplateError as error:
        hint = (
            " (pass system_prompt=None if the template rejects system messages)"
            if messages[0]["role"] == "system"
            else ""
        )
        raise ValueError(f"The tokenizer's chat template failed: {error}{hint}") from error


def _special_token_strings(tokenizer: Any) -> list[str]:
    special = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(token, "special", False):
            special.add(str(token))
    return sorted((s for s in special if s), key=len, reverse=True)


def _tokenize(tokenizer: Any, text: str, add_special_tokens: bool = False) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def _split_ids(
    tokenizer: Any, prompt_text: str, answer_text: str, add_special_tokens: bool
) -> tuple[list[int], list[int]]:
    """Token ids of prompt and answer such that their concatenation is the tokenization of the whole text."""
    prompt_ids = _tokenize(tokenizer, prompt_text, add_special_tokens)
    full_ids = _tokenize(tokenizer, prompt_text + answer_text, add_special_tokens)
    if full_ids[: len(prompt_ids)] == prompt_ids and len(full_ids) > len(prompt_ids):
        return prompt_ids, full_ids[len(prompt_ids) :]
    # A merge across the boundary: keep the prompt exactly as generation will see it.
    return prompt_ids, _tokenize(tokenizer, answer_text, False)


def _messages(prompt: str | list[dict[str, str]], system_prompt: str | None) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    if not messages or messages[-1].get("role") != "user":
        raise ValueError("The prompt messages must end with a user turn.")
    if system_prompt is not None and messages[0].get("role") != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def _uses_template(tokenizer: Any, use_chat_template: bool | None, prompt: Any) -> bool:
    has_template = bool(_template_source(tokenizer))
    if use_chat_template is None:
        use_chat_template = has_template
    elif use_chat_template and not has_template:
        raise ValueError("use_chat_template=True but the tokenizer has no chat template.")
    if not use_chat_template and not isinstance(prompt, str):
        raise ValueError("Chat messages need a tokenizer with a chat template (use_chat_template=True).")
    return use_chat_template


def encode_prompt(
    tokenizer: Any,
    prompt: str | list[dict[str, str]],
    *,
    system_prompt: str | None = None,
    template_kwargs: dict[str, Any] | None = None,
    use_chat_template: bool | None = None,
    reference_attention_mask: bool = False,
    label_convention: str = "end_of_turn",
) -> list[int]:
    """The prompt's tokens as generation sees them (`add_generation_prompt=True`); arguments as in `ChatFormat`
    (the last two do not change the prompt and are accepted so that every field can be passed)."""
    _check_convention(label_convention)
    if not _uses_template(tokenizer, use_chat_template, prompt):
        return _tokenize(tokenizer, PLAIN_PROMPT.format(question=prompt.strip()), True)
    return _tokenize(tokenizer, _render(tokenizer, _messages(prompt, system_prompt), True, template_kwargs or {}))


def encode_prompt_answer(
    tokenizer: Any,
    prompt: str | list[dict[str, str]],
    answer: str,
    *,
    system_prompt: str | None = None,
    template_kwargs: dict[str, Any] | None = None,
    use_chat_template: bool | None = None,
    reference_attention_mask: bool = False,
    label_convention: str = "end_of_turn",
) -> tuple[list[int], list[int]]:
    """`(prompt_ids, answer_ids)`: the tokens the answer is scored after, and the answer's target tokens.

    Args:
        prompt: a question (str) or a list of chat messages ending with a user turn.
        answer: the answer text (must not be empty; stripped under the `"end_of_turn"` convention).
        system_prompt: prepended as a system message unless `prompt` already starts with one; None: no system turn.
        template_kwargs: extra chat-template variables; only those the template mentions are passed.
        use_chat_template: None: use the chat template when the tokenizer has one; False: the plain-text format.
        reference_attention_mask: not used here (it only changes the attention mask); accepted so that every
            `ChatFormat` field can be passed.
        label_convention: `"end_of_turn"` or `"reference"` (see `ChatFormat`).

    `"end_of_turn"`: `answer_ids` ends with the template's end-of-turn token (the first special token the template
    writes after the answer, e.g. `<|eot_id|>` or `<|im_end|>`); anything the template writes after it (a newline) is
    dropped. Without a chat template, or when the template writes no special token after the answer, the eos token
    ends the answer. `prompt_ids` is then always exactly `encode_prompt(...)`.

    `"reference"`: the whole rendered conversation is tokenized, eos is appended unless it already ends with eos,
    and the first `len(encode_prompt(...))` tokens are the prompt, the rest the targets (as the TOFU reference does;
    if a merge across the boundary made those first tokens differ from the generation prompt, they are still what
    the answer is scored after).
    """
    _check_convention(label_convention)
    stripped = answer.strip() if isinstance(answer, str) else answer
    if not isinstance(stripped, str) or not stripped:
        raise ValueError(f"The answer must be a non-empty string, got {answer!r:.60}.")
    reference = label_convention == "reference"
    answer = answer if reference else stripped
    kwargs = template_kwargs or {}

    if not _uses_template(tokenizer, use_chat_template, prompt):
        prompt_text = PLAIN_PROMPT.format(question=prompt.strip())
        if reference:
            return _reference_split(tokenizer, prompt_text, prompt_text + " " + answer, True)
        prompt_ids, answer_ids = _split_ids(tokenizer, prompt_text, " " + answer, True)
        return prompt_ids, _with_eos(tokenizer, answer_ids)

    messages = _messages(prompt, system_prompt)
    prompt_text = _render(tokenizer, messages, True, kwargs)
    full_text = _render(tokenizer, messages + [{"role": "assistant", "content": answer}], False, kwargs)
    if reference:
        return _reference_split(tokenizer, prompt_text, full_text, False)
    if not full_text.startswith(prompt_text):
        raise ValueError(
            "The chat template does not render the generation prompt as a prefix of the answered conversation; "
            "use use_chat_template=False or another template."
        )
    rest = full_text[len(prompt_text) :]
    start = rest.find(answer)
    if start < 0:
        raise ValueError("The chat template does not render the answer verbatim; cannot locate the answer tokens.")
    suffix = rest[start + len(answer) :]
    hits = [(suffix.find(s), s) for s in _special_token_strings(tokenizer) if s in suffix]
    if hits:
        position, token = min(hits, key=lambda hit: (hit[0], -len(hit[1])))
        answer_text = rest[: start + len(answer)] + suffix[: position + len(token)]
        return _split_ids(tokenizer, prompt_text, answer_text, False)
    prompt_ids, answer_ids = _split_ids(tokenizer, prompt_text, rest[: start + len(answer)], False)
    return prompt_ids, _with_eos(tokenizer, answer_ids)


def _reference_split(
    tokenizer: Any, prompt_text: str, full_text: str, add_special_tokens: bool
) -> tuple[list[int], list[int]]:
    """The reference convention: tokens of the whole conversation (+ eos), split after the generation prompt's length."""
    if tokenizer.eos_token_id is None:
        raise ValueError("The tokenizer has no eos token to end the answer with.")
    num_prompt = len(_tokenize(tokenizer, prompt_text, add_special_tokens))
    full_ids = _tokenize(tokenizer, full_text, add_special_tokens)
    if not full_ids or full_ids[-1] != tokenizer.eos_token_id:
        full_ids.append(tokenizer.eos_token_id)
    if len(full_ids) <= num_prompt:
        raise ValueError("Under the reference label convention this answer has no target tokens (tokenization merge).")
    return full_ids[:num_prompt], full_ids[num_prompt:]


def _with_eos(tokenizer: Any, answer_ids: list[int]) -> list[int]:
    if tokenizer.eos_token_id is None:
        raise ValueError("The tokenizer has no eos token to end the answer with.")
    return (
        answer_ids if answer_ids and answer_ids[-1] == tokenizer.eos_token_id else answer_ids + [tokenizer.eos_token_id]
    )


def format_qa(
    tokenizer: Any,
    question: str | list[dict[str, str]],
    answer: str,
    *,
    system_prompt: str | None = None,
    template_kwargs: dict[str, Any] | None = None,
    use_chat_template: bool | None = None,
    reference_attention_mask: bool = False,
    label_convention: str = "end_of_turn",
) -> dict[str, list[int]]:
    """One (question, answer) pair as `{"input_ids", "labels", "attention_mask"}` (lists of ints, unpadded).

    `labels` is -100 on the prompt and equals `input_ids` on the answer + end-of-turn tokens. Arguments as in
    `ChatFormat`. With `reference_attention_mask=True` the mask is `input_ids != pad_token_id`, as the TOFU reference
    builds it: when pad = eos = end-of-turn this hides every end-of-turn token. Default: all ones.
    """
    prompt_ids, answer_ids = encode_prompt_answer(
        tokenizer,
        question,
        answer,
        system_prompt=system_prompt,
        template_kwargs=template_kwargs,
        use_chat_template=use_chat_template,
        label_convention=label_convention,
    )
    return _example(tokenizer, prompt_ids, answer_ids, reference_attention_mask)


def _example(tokenizer: Any, prompt_ids: list[int], answer_ids: list[int], reference_attention_mask: bool) -> dict:
    input_ids = prompt_ids + answer_ids
    mask = reference_mask(tokenizer, input_ids) if reference_attention_mask else [1] * len(input_ids)
    return {"input_ids": input_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids, "attention_mask": mask}


def reference_mask(tokenizer: Any, input_ids: Sequence[int]) -> list[int]:
    """The reference's attention mask `input_ids != pad_token_id` (reference quirk, see `format_qa`)."""
    if tokenizer.pad_token_id is None:
        raise ValueError("reference_attention_mask needs a pad token (the reference pads with eos).")
    return [int(token != tokenizer.pad_token_id) for token in input_ids]


def end_of_turn_token_id(tokenizer: Any, **format_kwargs: Any) -> int:
    """The token that ends an answer under this formatting (`<|eot_id|>`, `<|im_end|>`, or eos without a template),
    whatever the label convention."""
    format_kwargs = {**format_kwargs, "label_convention": "end_of_turn"}
    _, answer_ids = encode_prompt_answer(tokenizer, "Question?", "Answer.", **format_kwargs)
    return answer_ids[-1]


def _row_to_prompt_answer(row: dict[str, Any], index: int, question_key: str, answer_key: str) -> tuple[Any, Any, bool]:
    """`(prompt, answer, raw_text)` from a question/answer, TRL prompt/completion, or TRL conversational row."""
    if question_key in row and answer_key in row:
        answer = row[answer_key]
        if not isinstance(answer, str):
            raise ValueError(f"Row {index}: column {answer_key!r} must be a string, got {type(answer).__name__}.")
        return row[question_key], answer, False
    if "prompt" in row and "completion" in row:
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, str) and isinstance(completion, str):  # TRL standard: raw text, no template
            return prompt, completion, True
        if isinstance(prompt, list) and isinstance(completion, list) and len(completion) == 1:
            return prompt, completion[0]["content"], False
        raise ValueError(f"Row {index}: prompt/completion must both be strings or message lists (one completion).")
    if "messages" in row:
        messages = row["messages"]
        if not messages or messages[-1].get("role") != "assistant":
            raise ValueError(f"Row {index}: the last message must be the assistant's answer.")
        return messages[:-1], messages[-1]["content"], False
    raise ValueError(
        f"Unsupported columns {sorted(row)}: expected {question_key!r}/{answer_key!r}, TRL 'prompt'/'completion' "
        "or TRL conversational 'messages'."
    )


def tokenize_dataset(
    dataset: Dataset,
    tokenizer: Any,
    *,
    question_key: str = "question",
    answer_key: str = "answer",
    system_prompt: str | None = None,
    template_kwargs: dict[str, Any] | None = None,
    use_chat_template: bool | None = None,
    reference_attention_mask: bool = False,
    desc: str = "Tokenizing",
    label_convention: str = "end_of_turn",
    label_scope: str = "answer",
) -> Dataset:
    """Map a dataset to `input_ids`/`labels`/`attention_mask` (other columns are dropped; `desc` names the progress
    bar).

    Accepted rows: question/answer columns (names configurable), TRL's standard prompt/completion (raw text:
    prompt tokens + completion tokens + eos, no template, as TRL does), TRL's conversational prompt/completion, or
    TRL's conversational `messages` (the last message is the answer). Formatting arguments as in `format_qa`.

    `label_scope`: `"answer"` (default) labels the answer and its end-of-turn token only, whatever the row's form;
    `"conversation"` labels every token (system, question, template tokens and answer), as TRL's `SFTTrainer` does
    for a `messages` dataset by default. The token ids are the same either way.
    """
    if len(dataset) == 0:
        raise ValueError("Cannot tokenize an empty dataset.")
    if label_scope not in LABEL_SCOPES:
        raise ValueError(f"label_scope must be one of {list(LABEL_SCOPES)}, got {label_scope!r}.")

    def encode(row: dict[str, Any], index: int) -> dict[str, list[int]]:
        example = _encode(row, index)
        if label_scope == "conversation":
            example["labels"] = list(example["input_ids"])
        return example

    def _encode(row: dict[str, Any], index: int) -> dict[str, list[int]]:
        prompt, answer, raw = _row_to_prompt_answer(row, index, question_key, answer_key)
        if raw:
            if not answer:
                raise ValueError(f"Row {index}: empty completion.")
            prompt_ids, answer_ids = _split_ids(tokenizer, prompt, answer, True)
            return _example(tokenizer, prompt_ids, _with_eos(tokenizer, answer_ids), reference_attention_mask)
        return format_qa(
            tokenizer,
            prompt,
            answer,
            system_prompt=system_prompt,
            template_kwargs=template_kwargs,
            use_chat_template=use_chat_template,
            reference_attention_mask=reference_attention_mask,
            label_convention=label_convention,
        )

    return dataset.map(encode, with_indices=True, remove_columns=dataset.column_names, desc=desc)


def truncation_notice(dataset: Any, max_length: int | None, what: str, setting: str = "max_length") -> str | None:
    """One line when rows of `dataset` (tokenized: `input_ids`) are longer than `max_length` and will be cut to it
    (TRL's SFTTrainer truncates without a word): how many, the longest, the setting to raise. None when none is."""
    if max_length is None:
        return None
    lengths = [len(ids) for ids in dataset["input_ids"]]
    long = [n for n in lengths if n > max_length]
    if not long:
        return None
    lost = 0  # rows whose every target lies past the cut: nothing of them is left to train on
    targets = "completion_mask" if "completion_mask" in dataset.column_names else "labels"
    if targets in dataset.column_names:
        trained = (lambda v: v == 1) if targets == "completion_mask" else (lambda v: v != IGNORE_INDEX)
        lost = sum(1 for row in dataset[targets] if not any(trained(v) for v in list(row)[:max_length]))
    dropped = f"; {lost} of them lose every target token and are dropped" if lost else ""
    return (
        f"Warning: {len(long)} of the {len(lengths)} {what} rows are longer than {setting}={max_length} tokens (the "
        f"longest has {max(long)}): they are truncated to {max_length}, so their ends are not trained on{dropped}. "
        f"Raise {setting} to keep them whole."
    )


def as_row_dataset(dataset: Any, name: str) -> Any:
    """`dataset` as rows the trainers can index: a `datasets.Dataset` (or any sized, indexable set of dict rows) as it
    is, a list of dicts as a `Dataset`; a clear error for what is not rows (None, a tensor, a streaming dataset, a
    `DatasetDict`)."""
    if dataset is None:
        raise ValueError(f"The {name} dataset is None.")
    kind = type(dataset).__name__
    if hasattr(dataset, "shape") and hasattr(dataset, "dtype"):  # a torch tensor or a numpy array
        raise TypeError(
            f"The {name} dataset is a {kind} of shape {tuple(dataset.shape)}: give rows, e.g. "
            "`Dataset.from_dict({'input_ids': ..., 'labels': ...})` or question/answer text columns."
        )
    if isinstance(dataset, DatasetDict) or (isinstance(dataset, dict) and dataset and all(
        isinstance(v, Dataset) for v in dataset.values()
    )):  # fmt: skip
        raise TypeError(
            f"The {name} dataset is a {kind} with the splits {sorted(dataset)}: pass one split, e.g. "
            f"`dataset[{sorted(dataset)[0]!r}]`."
        )
    if isinstance(dataset, IterableDataset | TorchIterableDataset):
        raise TypeError(
            f"The {name} dataset is an {kind}: unlearning needs random access to its rows (pairing, per-example "
            "weights and reference values are by index). Load it without `streaming=True`, or "
            "`Dataset.from_list(list(dataset))`."
        )
    if isinstance(dataset, list):
        if not dataset or not all(isinstance(row, dict) for row in dataset):
            raise TypeError(f"The {name} dataset is a list but not a non-empty list of dict rows.")
        return Dataset.from_list(dataset)
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(f"The {name} dataset is of type {kind}: give a `datasets.Dataset` (or a list of dict rows).")
    return dataset


def prepare_lm_dataset(
    dataset: Any, tokenizer: Any | None, name: str, skip_prepare_dataset: bool = False, **format_kwargs: Any
) -> Any:
    """A dataset the trainers can use, checked: a tokenized one (`input_ids`/`labels`) as it is, a raw one (the rows
    `tokenize_dataset` accepts) tokenized with `tokenizer` and `format_kwargs` (arguments of `tokenize_dataset`),
    labels on the answer tokens only, and plain-text rows (a `text` column) cut into chunks of `max_length` tokens
    (`format_kwargs["max_length"]`, `chunk_text_dataset`), every token a target. `skip_prepare_dataset=True` (TRL's switch) only checks.
    """
    dataset = as_row_dataset(dataset, name)
    columns = getattr(dataset, "column_names", None)
    tokenized = "input_ids" in (columns if columns is not None else (dataset[0] if len(dataset) else {}))
    text_options = {key: format_kwargs.pop(key) for key in ("max_length", "add_bos") if key in format_kwargs}
    if not tokenized and not skip_prepare_dataset and isinstance(dataset, Dataset) and is_text_dataset(columns):
        if tokenizer is None:
            raise ValueError(f"The {name} dataset is plain text: pass processing_class=<tokenizer> to chunk it.")
        dataset = chunk_text_dataset(dataset, tokenizer, **text_options)  # every token a target (`data/text.py`)
    elif not tokenized and not skip_prepare_dataset and isinstance(dataset, Dataset) and len(dataset):
        if tokenizer is None:
            raise ValueError(
                f"The {name} dataset has text columns {columns}: pass processing_class=<tokenizer> to tokenize it, "
                "or tokenize it yourself (hf_unlearn.data.tokenize_dataset)."
            )
        dataset = tokenize_dataset(dataset, tokenizer, **{"desc": f"Tokenizing the {name} set", **format_kwargs})
    validate_lm_dataset(dataset, name)
    return dataset
