"""IdkNLL: teach the model to answer the forget questions with a refusal."""

from __future__ import annotations

import torch

from ..data.idk import IdkCollator, IdkDataset, idk_sequences_of
from ..utils import sequence_nll
from .base_trainer import UnlearnTrainer
from .step import normalized_sum

__all__ = ["IdkNLLTrainer", "idknll_loss"]


def idknll_loss(
    nll: torch.Tensor,
    num_tokens: torch.Tensor,
    weights: torch.Tensor | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """L = CE(x_f, y_idk): the token-mean NLL of the refusal answers (the TOFU "idk" baseline, Maini et al., 2024).

    With influence weights ŵ it is Σ_i ŵ_i ℓ̄_i / Σ ŵ, ℓ̄_i the token-mean NLL of idk row i.

    Args:
        nll: `(B,)` summed NLL of each idk row's answer tokens; num_tokens: `(B,)` their count.
        weights: `(B,)` ŵ_i ≥ 0, or None.
        num_items_in_batch: the step's idk answer tokens (Σ ŵ with weights); None: this batch's own.
    """
    if weights is not None:
        return normalized_sum(nll / num_tokens, weights, num_items_in_batch)
    return normalized_sum(nll, None, num_tokens.sum() if num_items_in_batch is None else num_items_in_batch)


class IdkNLLTrainer(UnlearnTrainer):
    """IdkNLL (the "idk" baseline of Maini et al., "TOFU: A Task of Fictitious
    Unlearning for LLMs", COLM 2024, arXiv:2401.06121). No reference model.

    Every forget row trains on an idk row instead (`hf_unlearn.data.idk`): its prompt with a refusal drawn per
    (seed, epoch, index) as the answer, so the step's forget tokens are the refusals' tokens. Logs `idk_nll` (token
    mean of the micro-batch's idk rows) and the retain term.

    Example:
    ```python
    >>> from hf_unlearn import IdkNLLConfig, IdkNLLTrainer
    >>> args = IdkNLLConfig(output_dir="idknll", max_steps=10)
    >>> IdkNLLTrainer(model, args, forget_dataset=forget, retain_dataset=retain, processing_class=tokenizer).train()
    ```
    """

    def prepare_datasets(self, forget_dataset, retain_dataset, args):
        seed = args.seed if args.pairing_seed is None else args.pairing_seed
        retain = retain_dataset if args.retain_loss != "none" else None
        return IdkDataset(forget_dataset, retain, seed=seed, replace_forget=True), IdkCollator(self.pad_token_id)

    def prepare_training(self, resume_from_checkpoint):
        super().prepare_training(resume_from_checkpoint)
        model = self.accelerator.unwrap_model(self.model)
        self.train_dataset.answers = idk_sequences_of(self.args, self.processing_class, model)

    def forget_loss(self, model, inputs):
        idk = inputs["forget"]  # the idk rows (IdkDataset with replace_forget)
        logits = model(input_ids=idk["input_ids"], attention_mask=idk["attention_mask"]).logits
        nll, num_tokens = sequence_nll(logits, idk["labels"])  # (B,), (B,)
        weights = self.weighter.batch_weights(inputs["index"]) if self.weighter is not None else None
        num_items = None if self.step_counts is None else self.step_counts.forget("token", weights is not None)
        self.record("idk_nll", nll.detach().sum() / num_tokens.sum())
        return self.args.forget_loss_weight * idknll_loss(nll, num_tokens, weights, num_items)
