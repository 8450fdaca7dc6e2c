"""Library versions, recorded in every fingerprint so that an upgrade recomputes instead of silently reusing."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version

__all__ = ["FINGERPRINT_PACKAGES", "environment_versions", "package_version"]

# Everything whose upgrade can change a trained model or a metric.
FINGERPRINT_PACKAGES = (
    "hf-unlearn",
    "torch",
    "transformers",
    "accelerate",
    "datasets",
    "trl",
    "peft",
    "tokenizers",
    "rouge-score",
    "scipy",
    "scikit-learn",
    "numpy",
)


def package_version(package: str) -> str | None:
    """The installed version of `package`, or None."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None


@cache
def environment_versions() -> dict[str, str | None]:
    """`{package: version}` for every package in `FINGERPRINT_PACKAGES` (the one list every fingerprint uses)."""
    return {package: package_version(package) for package in FINGERPRINT_PACKAGES}
