"""Integrations with Avalanche (replay) and Flower (summaries) strategies.

The Avalanche names load on first use, so that ``strategies.summaries`` (Flower) imports
without Avalanche and the other way round: a Flower server needs no continual-learning stack.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DistilledBuffer", "DistilledGDumbPlugin", "DistilledReplay", "class_shares"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("strategies.replay"), name)
    raise AttributeError(f"module 'strategies' has no attribute {name!r}")
