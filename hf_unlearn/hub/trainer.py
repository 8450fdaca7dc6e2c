"""The trainers' Hub side, as a mixin: `class UnlearnTrainer(HubMixin, Trainer)`. `push_to_hub()` goes through the one
push path (`publish_model`): the same folder, card, forget-text guard and "upload it later" command as
`hf-unlearn run --push-to-hub`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers.utils import logging

from .artifacts import head_sha256, hub_artifact, save_for_hub
from .card import (
    ModelCardInfo,
    adapter_settings,
    base_license,
    config_hyperparameters,
    default_versions,
    gguf_file_of,
    method_reference,
    unlearning_eval_results,
    write_model_card,
)
from .publish import forget_texts_of_rows, publish_model, write_push_folder
from .push import HubPush, check_hub_access, create_repo, hub_id_or_none

__all__ = ["HubMixin"]

logger = logging.get_logger(__name__)


def _is_peft(model: Any) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def _active_adapter(model: Any) -> str:
    active = model.active_adapter
    return active if isinstance(active, str) else active[0]


def _base_model_name(model: Any) -> str | None:
    """What `model` was made from (a Hub id or a path), as PEFT or transformers recorded it."""
    if _is_peft(model):
        recorded = getattr(model.peft_config[_active_adapter(model)], "base_model_name_or_path", None)
        if recorded:
            return recorded
        model = model.get_base_model()
    return getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)


class HubMixin:
    """`Trainer`'s Hub methods for unlearning: what is pushed is the adapter, the head delta or (asked for) the full
    model, private by default, in one commit, with a model card; the access is checked when the trainer is built.

    Expects a `transformers.Trainer` after it in the bases, with `args` an `UnlearnConfig` (`trainable`,
    `push_full_model`) and `forget_dataset` set; `__init__` calls `_init_hub()` once the model is wrapped.
    """

    hub_unavailable: str | None = None  # why push_to_hub() only writes its folder (offline, no token, ...)
    base_head_sha256: str | None = None

    def _init_hub(self) -> None:
        """With `push_to_hub`: a full model nobody asked to push fails now, not after training; a head delta records
        the head it replaces (so that it is never applied to another base model)."""
        if self.args.push_to_hub and self._hub_artifact() == "head":
            self.base_head_sha256 = head_sha256(self.accelerator.unwrap_model(self.model))

    def _hub_artifact(self) -> str:
        model = self.accelerator.unwrap_model(self.model)
        return hub_artifact(
            is_peft=_is_peft(model), trainable=self.args.trainable, push_full_model=self.args.push_full_model
        )

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Trainer's repository set-up, checked first (`check_hub_access`): offline, without a token or without the
        Hub, one warning says why, and `push_to_hub()` later writes its folder without uploading."""
        if not self.is_world_process_zero():
            return
        repo_id = self.args.hub_model_id or Path(self.args.output_dir).absolute().name
        token = token if token is not None else self.args.hub_token
        self.push_in_progress = None
        self.hub_unavailable = check_hub_access([repo_id], token)
        if self.hub_unavailable is not None:
            self.hub_model_id = repo_id
            logger.warning(
                f"push_to_hub: not pushing to {repo_id} ({self.hub_unavailable}); push_to_hub() writes "
                f"{Path(self.args.output_dir) / 'hub'} instead."
            )
            return
        private = private if private is not None else self.args.hub_private_repo
        self.hub_model_id = create_repo(repo_id, private=private is not False, token=token)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # Trainer's checkpoint push (hub_strategy other than "end"), skipped when the Hub was found unavailable.
        if self.hub_unavailable is None:
            super()._push_from_checkpoint(checkpoint_folder)

    # ----- the card ----------------------------------------------------------------------------------------------

    def model_card_info(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
        *,
        finetuned_from: str | None = None,
        data: dict[str, str] | None = None,
        evaluation: str | None = None,
        metrics: dict[str, float] | None = None,
        base_gguf_file: str | None = None,
        versions: dict[str, str | None] | None = None,
    ) -> ModelCardInfo:
        """What this trainer's card says (`create_model_card` has the arguments)."""
        model = self.accelerator.unwrap_model(self.model)
        artifact = self._hub_artifact()
        method = type(self).__name__.removesuffix("Trainer") or "Unlearn"
        repo_id = self.hub_model_id or self.args.hub_model_id  # None: a local card (the push sets its repository)
        base = finetuned_from or _base_model_name(model)
        if data is None:
            name = dataset_name or "the forget set"
            data = {"forget": f"{name} ({len(self.forget_dataset)} rows)"}
            retain = getattr(self.train_dataset, "retain", None)
            if retain is not None:
                data["retain"] = f"the retain set ({len(retain)} rows)"
        hyperparameters = config_hyperparameters(self.args)
        if _is_peft(model):
            hyperparameters["adapter"] = adapter_settings(model.peft_config[_active_adapter(model)])
        gguf = base_gguf_file or gguf_file_of(base)
        described = None if hub_id_or_none(base) else "a local model, not on the Hub"
        if gguf and described:
            described = f"the GGUF file `{gguf}` of a local model, not on the Hub"
        index_dataset = dataset_name if hub_id_or_none(dataset_name) else "custom"
        shown = hub_id_or_none(base) or (f"`{Path(base).name}`" if base else "A model")  # no local paths in a card
        return ModelCardInfo(
            title=model_name or (repo_id or Path(self.args.output_dir).absolute().name).split("/")[-1],
            summary=f"{shown} after unlearning with {method} (hf-unlearn), {self.state.global_step} steps.",
            method=method,
            method_reference=method_reference(type(self)),
            artifact=artifact,
            repo_id=repo_id,
            base_model=hub_id_or_none(base),
            base_model_description=described,
            base_gguf_file=gguf,
            tags=[tags] if isinstance(tags, str) else list(tags or []),
            datasets=[dataset_name] if hub_id_or_none(dataset_name) else [],
            hyperparameters=hyperparameters,
            data=data,
            evaluation=evaluation,
            eval_results=unlearning_eval_results(
                metrics or {}, dataset_type=index_dataset, dataset_name=dataset_name or "forget set"
            ),
            versions=versions or default_versions(),
            **base_license(base),
        )

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
        *,
        folder: str | None = None,
        **card_kwargs: Any,
    ):
        """Write the model card (`huggingface_hub.ModelCard`) to `folder` (default `output_dir`), keeping PEFT's
        metadata: method, hyperparameters, data by name and row count (`dataset_name`, or `data` as
        `{"forget": "name (N rows)", ...}`), an evaluation table (markdown, `evaluation`) and its numbers for the
        `model-index` (`metrics`), the base model's license when its card is on this machine, versions and how to
        load the result (`base_gguf_file`: the base's GGUF file, when that is not found locally). Returns the card."""
        if not self.is_world_process_zero():
            return None
        info = self.model_card_info(model_name, dataset_name, tags, **card_kwargs)
        return write_model_card(folder or self.args.output_dir, info)

    # ----- the push ----------------------------------------------------------------------------------------------

    def _hub_push(
        self,
        folder: str | None = None,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
    ) -> HubPush:
        private = private if private is not None else self.args.hub_private_repo
        return HubPush(
            label=type(self).__name__.removesuffix("Trainer") or "Unlearn",
            method=type(self).__name__.removesuffix("Trainer") or "Unlearn",
            repo_id=self.hub_model_id or self.args.hub_model_id or Path(self.args.output_dir).absolute().name,
            artifact=self._hub_artifact(),
            folder=Path(folder or Path(self.args.output_dir) / "hub"),
            private=private is not False,  # None (Trainer's "org default") is private here too
            token=token if token is not None else self.args.hub_token,
            revision=revision if revision is not None else self.args.hub_revision,
            skip_reason=self.hub_unavailable,
        )

    def _write_hub_files(self, folder: Path) -> None:
        model = self.accelerator.unwrap_model(self.model)
        artifact = self._hub_artifact()
        save_for_hub(
            model,
            folder,
            artifact,
            processing_class=None if artifact == "head" else self.processing_class,
            base_model=_base_model_name(model),
            base_head_sha256=self.base_head_sha256,
        )

    def _forget_texts(self, extra: Any) -> list[str]:
        """The forget set's text, decoded from its rows (the raw rows are gone once tokenized), plus `extra`; the
        formatting's own text (the system prompt of `dataset_kwargs`) is not the forget set's."""
        formatting = [str(value) for value in (self.args.dataset_kwargs or {}).values() if isinstance(value, str)]
        rows = forget_texts_of_rows(self.forget_dataset, self.processing_class, not_private=formatting)
        return [*rows, *(extra or ())]

    def save_for_hub(self, folder: str | None = None, forget_texts: Any = None, **card_kwargs: Any) -> Path:
        """Write what `push_to_hub()` uploads into `folder` (default `output_dir/hub`, emptied first): the adapter,
        the head delta, or with `push_full_model` the full model, plus the tokenizer and the model card; refused
        (ValueError) if any file holds forget-set text (`forget_texts`: more texts to look for)."""
        return write_push_folder(
            self._hub_push(folder),
            self._write_hub_files,
            self.model_card_info(**card_kwargs),
            forget_texts=self._forget_texts(forget_texts),
        )

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        *,
        folder: str | None = None,
        forget_texts: Any = None,
        **card_kwargs: Any,
    ):
        """Push what unlearning changed to `args.hub_model_id` in one commit (private by default): the PEFT
        adapter, the head delta (`trainable="head"`; loaded with `hf_unlearn.hub.load_head_delta`) or, with
        `push_full_model`, the full model, with its model card (keyword arguments go to `create_model_card`).

        The folder is written to `output_dir/hub` first and refused if any file holds forget-set text. When the Hub
        is unavailable (offline, no token) it is only written, and the log gives the command that uploads it later
        (`hf upload ... --private` for a private repository). Returns `upload_folder`'s answer, or None."""
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        token = token if token is not None else self.args.hub_token
        if self.hub_model_id is None:
            self.init_hf_repo(token=token, private=private)
        if not self.is_world_process_zero():
            return None
        self._finish_current_push()
        result = publish_model(
            self._hub_push(folder, token, revision, private),
            self._write_hub_files,
            self.model_card_info(**card_kwargs),
            forget_texts=self._forget_texts(forget_texts),
            commit_message=commit_message or "Upload unlearned model (hf-unlearn)",
            blocking=blocking,
        )
        (logger.info if result.record["pushed"] else logger.warning)(result.message)
        return result.commit
