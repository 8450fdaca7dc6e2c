"""Lazy package exports (PEP 562): `import hf_unlearn` and the CLI start without importing torch or transformers."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str], namespace: dict[str, Any]):
    """`__getattr__` and `__dir__` for a package whose public names (`name -> relative module`) load on first use."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        namespace[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
