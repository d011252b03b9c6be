"""Dataset registry: ``load_dataset(name, root)`` returns an :class:`ImageData`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from fedcl.data.base import ImageData
from fedcl.registry import Registry

__all__ = ["DATASETS", "list_datasets", "load_dataset", "register_dataset", "resolve_root"]

DATASETS: Registry[ImageData] = Registry("dataset")


def register_dataset(name: str) -> Callable[[Callable[..., ImageData]], Callable[..., ImageData]]:
    """Register a loader ``fn(root: Path, download: bool) -> ImageData`` under ``name``."""
    return DATASETS.register(name)


def list_datasets() -> list[str]:
    """Names of every registered dataset."""
    return DATASETS.names()


def resolve_root(root: str | os.PathLike[str] | None = None) -> Path:
    """``root`` if given, else ``$FEDCL_DATA``, else ``./data``."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get("FEDCL_DATA")
    return Path(env).expanduser() if env else Path("data")


def load_dataset(name: str, root: str | os.PathLike[str] | None = None, *, download: bool = False) -> ImageData:
    """Load a registered dataset as normalised in-memory tensors.

    Args:
        name: a registered name, e.g. ``digits`` (bundled), ``mnist``, ``cifar10``.
        root: data folder; defaults to ``$FEDCL_DATA`` then ``./data``. Unused by ``digits``.
        download: let torchvision download the files (needs internet).

    Returns:
        The dataset, train and test splits, normalised with per-dataset mean/std.

    Raises:
        ConfigError: the name is unknown (the message lists valid names).
        DataError: the files are missing or unreadable (the message says which and where).
    """
    return DATASETS.get(name)(resolve_root(root), download)
