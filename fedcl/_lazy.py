"""Names of a package imported on first use (PEP 562), so that ``import fedcl`` stays light."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(namespace: dict[str, Any], table: dict[str, str]) -> tuple[Callable[[str], Any],
                                                                               Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__`` that import ``name`` from ``table[name]`` on first use
    and keep it in ``namespace`` (the module's ``globals()``), so later look-ups skip the hook."""
    module = namespace.get("__name__", "")

    def __getattr__(name: str) -> Any:
        if name in table:
            value = getattr(importlib.import_module(table[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted([*namespace, *table])

    return __getattr__, __dir__
