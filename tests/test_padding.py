"""The two hand-written paddings against TRL's `pad` on the same rows: identical ids. They stay ours because
`trl.trainer.utils` imports transformers' and TRL's trainers (about 10 s of start-up on the shared 2-core machine,
measured beside a 0.1 s import of the runner) for what is a few lines; the evaluation pads without any trainer."""

import torch
from trl.trainer.utils import pad

from hf_unlearn.data.pairing import pad_examples
from hf_unlearn.evaluation.runner import _left_pad
from hf_unlearn.utils import IGNORE_INDEX

ROWS = [[5, 6, 7], [8], [9, 10]]


def test_the_runners_left_padding_gives_trls_ids():
    length = max(len(row) for row in ROWS)
    ours = _left_pad(ROWS, 3, length)
    assert torch.equal(ours, pad([torch.tensor(row) for row in ROWS], padding_value=3, padding_side="left"))
    assert ours.tolist() == [[5, 6, 7], [3, 3, 8], [3, 9, 10]]
    masks = _left_pad(([1] * len(row) for row in ROWS), 0, length)
    assert torch.equal(masks, pad([torch.ones(len(row), dtype=torch.long) for row in ROWS], 0, padding_side="left"))


def test_the_trainers_right_padding_gives_trls_ids():
    examples = [{"input_ids": row, "labels": [IGNORE_INDEX] + row[1:]} for row in ROWS]
    batch = pad_examples(examples, pad_token_id=3)
    assert torch.equal(batch["input_ids"], pad([torch.tensor(row) for row in ROWS], padding_value=3))
    labels = [torch.tensor(example["labels"]) for example in examples]
    assert torch.equal(batch["labels"], pad(labels, padding_value=IGNORE_INDEX))
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100], [-100, 10, -100]]
