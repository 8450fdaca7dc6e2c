"""Planning and making pushes: the hub settings of a recipe, repository names, the access check made before any
training, and the upload (one commit per push)."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, get_token
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .artifacts import hub_artifact

__all__ = [
    "HUB_SETTINGS",
    "HubPush",
    "PushResult",
    "check_hub_access",
    "check_pushes",
    "create_repo",
    "finish_push",
    "hub_id_or_none",
    "hub_repo_id",
    "plan_hub_pushes",
    "push_folder",
    "split_hub_settings",
    "upload_command",
]

# Config fields that say where and whether a model is pushed: they never shape the model, so they never enter a
# fingerprint, and `hub_token` never enters a file.
HUB_SETTINGS = (
    "push_to_hub",
    "hub_model_id",
    "hub_private_repo",
    "hub_token",
    "hub_strategy",
    "hub_always_push",
    "hub_revision",
    "push_full_model",
)


def split_hub_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`(training settings, hub settings)` of a recipe section: the hub settings never shape a model."""
    return (
        {key: value for key, value in settings.items() if key not in HUB_SETTINGS},
        {key: value for key, value in settings.items() if key in HUB_SETTINGS},
    )


def hub_repo_id(repo_id: str, label: str, several: bool) -> str:
    """The repository of one method: `repo_id` itself when a run pushes one method, `repo_id-<label>` when it pushes
    several under one name (characters a repository name cannot hold become `-`)."""
    if not several:
        return repo_id
    suffix = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]+", "-", label)).strip("-.")
    return f"{repo_id}-{suffix}"


def hub_id_or_none(name: str | None) -> str | None:
    """`name` when it names a Hub repository, None for a local path (or nothing): only Hub ids go into metadata."""
    if not name or name.startswith(("/", ".", "~")) or os.path.exists(name):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


@dataclass
class HubPush:
    """One planned push: the method behind it, where it goes, what it holds, and the local folder written first."""

    label: str
    method: str
    repo_id: str
    artifact: str
    folder: Path
    private: bool = True
    token: str | None = None
    revision: str | None = None
    skip_reason: str | None = None  # why it is written locally only (offline, no token, ...); None: pushed

    def describe(self) -> str:
        visibility = "private" if self.private else "public"
        return f"{self.label} -> {self.repo_id} ({self.artifact}, {visibility}; folder {self.folder})"


def plan_hub_pushes(
    specs: dict[str, dict[str, Any]],
    shared: dict[str, Any],
    build_config: Callable[[str, dict[str, Any]], Any],
    folder_of: Callable[[str], Path],
    *,
    is_peft: bool,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, HubPush]]:
    """Take the hub settings out of a recipe's methods and plan their pushes; bad settings raise before any work.

    Args:
        specs: `label -> {method: NAME, **config fields}` (the recipe's `methods`).
        shared: the settings every method shares (the recipe's `unlearn`).
        build_config: `(label, spec with the shared settings merged in) -> the method's config`, to read the typed
            values (`trainable`, `hub_private_repo`, ...).
        folder_of: `label -> the local folder written before the push`.
        is_peft: whether the methods train a PEFT adapter.

    Returns the specs and the shared settings without hub settings (for training and fingerprints) and
    `label -> HubPush` for every method with `push_to_hub`. Repository names: a method's own `hub_model_id` as given;
    the shared one as given when one method pushes, else `<hub_model_id>-<label>` (`hub_repo_id`)."""
    shared_train, shared_hub = split_hub_settings(shared)
    stripped, configs = {}, {}
    for label, spec in specs.items():
        train, own_hub = split_hub_settings(spec)
        stripped[label] = train
        if {**shared_hub, **own_hub}.get("push_to_hub"):
            configs[label] = (own_hub, build_config(label, {**shared, **spec}))
    several = sum(1 for own, _ in configs.values() if "hub_model_id" not in own) > 1
    pushes = {}
    for label, (own, config) in configs.items():
        if not config.hub_model_id:
            raise ValueError(
                f"methods.{label}: push_to_hub needs hub_model_id (a repository such as your-name/model-name); "
                "`hf-unlearn run --push-to-hub REPO_ID` sets both."
            )
        repo_id = config.hub_model_id if "hub_model_id" in own else hub_repo_id(config.hub_model_id, label, several)
        try:
            validate_repo_id(repo_id)
        except HFValidationError as error:
            raise ValueError(f"methods.{label}: {repo_id!r} is not a valid Hub repository id ({error}).") from None
        artifact = hub_artifact(
            is_peft=is_peft,
            trainable=config.trainable,
            push_full_model=config.push_full_model,
            where=f"methods.{label}: push_to_hub: ",
        )
        pushes[label] = HubPush(
            label=label,
            method=str(specs[label].get("method", label)),
            repo_id=repo_id,
            artifact=artifact,
            folder=Path(folder_of(label)),
            private=config.hub_private_repo is not False,  # None (Trainer's "org default") is private here too
            token=config.hub_token,
            revision=config.hub_revision,
        )
    taken: dict[str, str] = {}
    for label, push in pushes.items():
        if push.repo_id in taken:
            raise ValueError(f"methods.{taken[push.repo_id]} and methods.{label} would both push to {push.repo_id!r}.")
        taken[push.repo_id] = label
    return stripped, shared_train, pushes


# ------------------------------------------------------------------------------------------------ access and upload


def _offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return constants.HF_HUB_OFFLINE or any(str(flag).upper() in ("1", "ON", "YES", "TRUE") for flag in flags)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def check_hub_access(repo_ids: Iterable[str], token: str | None = None, *, network: bool = True) -> str | None:
    """None when pushes to `repo_ids` can go ahead, else why not, in one line.

    Checked in this order: offline mode (`HF_HUB_OFFLINE`), a token (the argument, `HF_TOKEN` or `hf auth login`),
    then, with `network`, one `whoami` call: the Hub reachable, the token valid and not read-only, every repository's
    namespace the token's user or one of its organisations. A repository id that cannot exist raises a ValueError."""
    repo_ids = list(repo_ids)
    for repo_id in repo_ids:
        try:
            validate_repo_id(repo_id)
        except HFValidationError as error:
            raise ValueError(f"{repo_id!r} is not a valid Hub repository id ({error}).") from None
    if _offline():
        return "HF_HUB_OFFLINE is set"
    token = token or get_token()
    if not token:
        return "no Hugging Face token (run `hf auth login` or set HF_TOKEN)"
    if not network:
        return None
    try:
        info = HfApi().whoami(token=token)
    except Exception as error:  # connection errors come from whichever HTTP client huggingface_hub uses
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status == 401:
            return "the Hugging Face token is invalid"
        return f"the Hub cannot be reached ({_first_line(error)})"
    role = ((info.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        return "the Hugging Face token is read-only (pushing needs a write token)"
    allowed = {info.get("name")} | {org.get("name") for org in info.get("orgs") or []}
    for repo_id in repo_ids:
        namespace = repo_id.split("/")[0] if "/" in repo_id else None
        if namespace is not None and namespace not in allowed:
            return f"the token's user {info.get('name')!r} cannot write to the namespace {namespace!r}"
    return None


def create_repo(repo_id: str, *, private: bool = True, token: str | None = None) -> str:
    """Create the repository if it does not exist (private unless `private=False`); returns its full id."""
    return HfApi(token=token).create_repo(repo_id, private=private, exist_ok=True).repo_id


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload unlearned model (hf-unlearn)",
    blocking: bool = True,
) -> Any:
    """Create the repository if needed (private unless `private=False`) and upload `folder` in one commit; returns
    `upload_folder`'s answer (a `CommitInfo`, or a Future with `blocking=False`)."""
    return HfApi(token=token).upload_folder(
        repo_id=create_repo(repo_id, private=private, token=token),
        folder_path=str(folder),
        commit_message=commit_message,
        revision=revision,
        run_as_future=not blocking,
    )


def upload_command(push: HubPush) -> str:
    """The one command that uploads a folder written while the Hub was unavailable, as every push path prints it:
    the repository created private when the push was private (`--private`), the revision kept, no token."""
    parts = ["hf", "upload", push.repo_id, str(push.folder), ".", "--repo-type", "model"]
    if push.revision:
        parts += ["--revision", push.revision]
    if push.private:
        parts.append("--private")
    return shlex.join(parts)


def describe_pushes(pushes: Iterable[HubPush]) -> list[str]:
    """The dry-run lines of planned pushes, with the offline/token check (no network in a dry run)."""
    pushes = list(pushes)
    lines = ["", "Hub (each after its evaluation, one commit):", *(f"  {push.describe()}" for push in pushes)]
    problem = check_pushes(pushes, network=False)
    return lines + ([f"  {problem}"] if problem else [])


def check_pushes(pushes: Iterable[HubPush], *, network: bool = True) -> str | None:
    """`check_hub_access` for planned pushes (one `whoami` per token), before any training: sets each push's
    `skip_reason` and returns the one line to print when they cannot be pushed, else None."""
    pushes = list(pushes)
    by_token: dict[str | None, list[HubPush]] = {}
    for push in pushes:
        by_token.setdefault(push.token, []).append(push)
    reasons = []
    for token, group in by_token.items():
        reason = check_hub_access([push.repo_id for push in group], token, network=network)
        for push in group:
            push.skip_reason = reason
        if reason is not None and reason not in reasons:
            reasons.append(reason)
    if not reasons:
        return None
    skipped = ", ".join(str(push.folder) for push in pushes if push.skip_reason is not None)
    return f"Hub: not pushing ({'; '.join(reasons)}); the folders that would be pushed are still written ({skipped})."


@dataclass
class PushResult:
    """What became of one push: the record kept in `results.json` (no token), the line to print or log, and
    `upload_folder`'s answer (a `CommitInfo`, a Future with `blocking=False`, None when not pushed)."""

    record: dict[str, Any]
    message: str
    commit: Any = field(default=None, repr=False)


def finish_push(push: HubPush, commit_message: str, *, blocking: bool = True) -> PushResult:
    """Upload a written push folder, unless the push was found impossible at the start; a failed upload is
    reported, not raised (the run's other results are worth keeping). Not pushed, the message gives the folder and
    `upload_command`."""
    record: dict[str, Any] = {
        "repo_id": push.repo_id,
        "artifact": push.artifact,
        "private": push.private,
        "folder": str(push.folder),
        "pushed": False,
    }
    reason = push.skip_reason
    if reason is None:
        try:
            info = push_folder(
                push.folder,
                push.repo_id,
                private=push.private,
                token=push.token,
                revision=push.revision,
                commit_message=commit_message,
                blocking=blocking,
            )
        except Exception as error:  # the network, the Hub or the token failed mid-run
            reason = f"the upload failed: {_first_line(error)}"
        else:
            record.update(pushed=True, commit_url=getattr(info, "commit_url", None))
            visibility = "private" if push.private else "public"
            message = f"{push.label}: pushed {push.artifact} to https://huggingface.co/{push.repo_id} ({visibility})."
            return PushResult(record, message, info)
    record["reason"] = reason
    message = f"{push.label}: not pushed ({reason}); {push.folder} holds it; upload it with: {upload_command(push)}"
    return PushResult(record, message)
