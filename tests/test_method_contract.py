"""The trainer contract: a method is a config and a loss. The docs' walkthrough method (docs/methods.md#adding-a-method)
works with nothing else changed, and no shipped method overrides `__init__`, `train` or `compute_loss`."""

import copy
import inspect

import pytest
import torch

from hf_unlearn.trainers import METHODS, UnlearnConfig, UnlearnTrainer, normalized_sum
from hf_unlearn.utils import token_logprobs

from .conftest import tiny_gpt2
from .scripts.batch_split_worker import LENGTHS, rows


def maxga_loss(max_nll, num_items_in_batch=None):
    """L = −mean_i max_t ℓ_{i,t}. Args: max_nll `(B,)`; num_items_in_batch: the step's forget sequences."""
    return -normalized_sum(max_nll, None, num_items_in_batch)


class MaxGATrainer(UnlearnTrainer):
    def forget_loss(self, model, inputs):
        batch = self.forget_forward(model, inputs)  # forward, per-sequence NLL, weights, logging
        logps, mask = token_logprobs(batch.logits, inputs["forget"]["labels"])
        return maxga_loss((-logps).masked_fill(~mask, 0).amax(-1), batch.num_items("sequence"))


def test_maxga_loss_by_hand():
    assert maxga_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)
    assert maxga_loss(torch.tensor([1.0, 3.0]), num_items_in_batch=4).item() == pytest.approx(-1.0)


def test_the_walkthrough_method_trains_and_does_not_depend_on_the_split(tmp_path):
    forget = rows(1, LENGTHS, 2)
    model = tiny_gpt2(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    updates = []
    for per_device, accumulation in ((8, 1), (2, 4)):
        trained = copy.deepcopy(model)
        args = UnlearnConfig(
            output_dir=str(tmp_path / f"{per_device}"), max_steps=1, optim="sgd", learning_rate=0.1, max_grad_norm=0,
            weight_decay=0.0, per_device_train_batch_size=per_device, gradient_accumulation_steps=accumulation,
            disable_tqdm=True, save_strategy="no", logging_steps=1,
        )  # fmt: skip
        trainer = MaxGATrainer(trained, args, forget_dataset=forget)
        trainer.train()
        assert "forget_nll" in trainer.state.log_history[0]
        updates.append(torch.cat([(a - b).flatten() for a, b in zip(trained.parameters(), model.parameters())]))
    assert updates[0].norm() > 0
    assert ((updates[0] - updates[1]).norm() / updates[0].norm()) < 1e-4


@pytest.mark.parametrize("name", list(METHODS))
def test_methods_fill_in_hooks_only(name):
    trainer_class = METHODS[name][1]
    assert trainer_class.__bases__ == (UnlearnTrainer,), f"{name} inherits from another method"
    for method in ("__init__", "train", "compute_loss", "training_step"):
        assert method not in vars(trainer_class), f"{trainer_class.__name__} overrides {method}"
    assert "forget_loss" in vars(trainer_class)
    assert inspect.getsource(trainer_class).count("check_finite") == 0  # the base checks every loss
