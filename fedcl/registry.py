"""A tiny registry in the style of timm's and Opacus's: names map to factories.

``register`` refuses duplicates; ``create`` drops ``None`` keywords so that the
factory's own defaults survive, and names every valid entry when a name is unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from fedcl.errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories returning ``T``.

    Args:
        kind: what the entries are ("dataset", "model", ...), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator that registers a factory under ``name`` (refuses duplicates)."""

        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = fn
            return fn

        return deco

    def get(self, name: str) -> Callable[..., T]:
        """The factory for ``name``; a ConfigError listing valid names otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(self.names())
            raise ConfigError(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> T:
        """Call the factory for ``name``, dropping ``None`` keyword arguments."""
        fn = self.get(name)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        return fn(*args, **kwargs)

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
