"""IdkDPO: direct preference optimisation with a refusal preferred over the forget answer."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.idk import IdkCollator, IdkDataset, idk_sequences_of
from ..utils import sequence_nll
from .base_trainer import UnlearnTrainer
from .step import normalized_sum

__all__ = ["IdkDPOTrainer", "idkdpo_loss"]


def idkdpo_loss(
    chosen_nll: torch.Tensor,
    chosen_ref_nll: torch.Tensor,
    rejected_nll: torch.Tensor,
    rejected_ref_nll: torch.Tensor,
    beta: float,
    weights: torch.Tensor | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """L = −(2/β)·mean_i log σ(β[r_i(y_idk) − r_i(y_f)]), r(y) = log π_θ(y|x) − log π_ref(y|x) = ℓ_ref − ℓ_θ with ℓ
    the summed answer NLL: the sigmoid DPO loss (Rafailov et al., NeurIPS 2023) scaled by 2/β as the reference
    toolkit's IdkDPO (TOFU's own `dpo` loss has no 2/β).

    TRL's DPO loss is computed inside `DPOTrainer._compute_loss` from a trainer instance and its own batches (TRL
    1.16 has no functional form), so it is written out here.

    Args:
        chosen_nll, chosen_ref_nll: `(B,)` ℓ_θ and ℓ_ref of the idk answers (preferred).
        rejected_nll, rejected_ref_nll: `(B,)` ℓ_θ and ℓ_ref of the forget answers (rejected).
        weights: `(B,)` influence weights ŵ_i, or None.
        num_items_in_batch: the step's forget sequences (Σ ŵ with weights); None: this batch's own.
    """
    margin = (chosen_ref_nll - chosen_nll) - (rejected_ref_nll - rejected_nll)  # (B,) r(y_idk) − r(y_f)
    return -(2.0 / beta) * normalized_sum(F.logsigmoid(beta * margin), weights, num_items_in_batch)


class IdkDPOTrainer(UnlearnTrainer):
    """IdkDPO: DPO (Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward
    Model", NeurIPS 2023) on pairs (refusal ≻ forget answer), the TOFU baseline of Maini et al. (arXiv:2401.06121).

    Each forget row is paired with an idk row (`hf_unlearn.data.idk`: its prompt with a refusal drawn per (seed,
    epoch, index)). π_ref is the frozen initial model, run on every batch (`reference="live"`). Logs `forget_nll`,
    `idk_nll` (token means of the micro-batch), `reward_margin` (mean r(y_idk) − r(y_f)) and the retain term.

    Example:
    ```python
    >>> from hf_unlearn import IdkDPOConfig, IdkDPOTrainer
    >>> args = IdkDPOConfig(output_dir="idkdpo", beta=0.1, max_steps=10)
    >>> IdkDPOTrainer(model, args, forget_dataset=forget, retain_dataset=retain, processing_class=tokenizer).train()
    ```
    """

    needs_reference_nll = True

    def prepare_datasets(self, forget_dataset, retain_dataset, args):
        seed = args.seed if args.pairing_seed is None else args.pairing_seed
        retain = retain_dataset if args.retain_loss != "none" else None
        return IdkDataset(forget_dataset, retain, seed=seed), IdkCollator(self.pad_token_id)

    def prepare_training(self, resume_from_checkpoint):
        super().prepare_training(resume_from_checkpoint)
        model = self.accelerator.unwrap_model(self.model)
        self.train_dataset.answers = idk_sequences_of(self.args, self.processing_class, model)

    def forget_loss(self, model, inputs):
        batch = self.forget_forward(model, inputs)  # the rejected forget answers, with π_ref's NLL
        idk = inputs["idk"]
        logits = model(input_ids=idk["input_ids"], attention_mask=idk["attention_mask"]).logits
        idk_nll, idk_tokens = sequence_nll(logits, idk["labels"])  # (B,), (B,)
        idk_ref_nll = sequence_nll(self.reference_logits(model, idk), idk["labels"])[0]  # (B,)
        self.record("idk_nll", idk_nll.detach().sum() / idk_tokens.sum())
        margin = (idk_ref_nll - idk_nll.detach()) - (batch.ref_nll - batch.nll.detach())
        self.record("reward_margin", margin.mean())
        loss = idkdpo_loss(
            idk_nll, idk_ref_nll, batch.nll, batch.ref_nll, self.args.beta, batch.weights, batch.num_items("sequence")
        )
        return self.args.forget_loss_weight * loss
