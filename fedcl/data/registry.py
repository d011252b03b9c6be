"""Dataset registry: ``load_dataset(name, root)`` returns an :class:`ImageData`."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from fedcl.data.base import ImageData
from fedcl.errors import ConfigError
from fedcl.registry import Registry

__all__ = ["DATASETS", "list_datasets", "load_dataset", "load_dataset_from_config", "register_dataset",
           "resolve_root"]

DATASETS: Registry[ImageData] = Registry("dataset")


def register_dataset(name: str) -> Callable[[Callable[..., ImageData]], Callable[..., ImageData]]:
    """Register a loader ``fn(root: Path, download: bool) -> ImageData`` under ``name``.

    A loader that also takes ``image_size`` resizes while decoding; any other is resized afterwards.
    """
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


def _resize(data: ImageData, size: int) -> ImageData:
    """Bilinear (antialiased) resize of every split; exact on normalised tensors (the resize is linear)."""
    def go(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None or tuple(x.shape[-2:]) == (size, size):
            return x
        chunks = [torch.nn.functional.interpolate(c, size=(size, size), mode="bilinear", antialias=True,
                                                  align_corners=False) for c in x.split(8192)]
        return torch.cat(chunks).contiguous()

    return replace(data, train_images=go(data.train_images), test_images=go(data.test_images),
                   val_images=go(data.val_images))


def load_dataset(name: str, root: str | os.PathLike[str] | None = None, *, download: bool = False,
                 image_size: int | None = None, val_fraction: float = 0.0, seed: int = 0) -> ImageData:
    """Load a registered dataset as normalised in-memory tensors.

    Args:
        name: a registered name, e.g. ``digits`` (bundled), ``mnist``, ``fashion_mnist``, ``cifar10``,
            ``imagefolder`` (``root`` holds ``train/<class>/*`` and ``test/<class>/*``), ``cifar10_jpeg``.
        root: data folder; defaults to ``$FEDCL_DATA`` then ``./data``. Unused by ``digits``.
        download: let torchvision download the files (needs internet).
        image_size: resize every image to ``image_size`` x ``image_size`` (None keeps the size).
        val_fraction: carve a stratified validation split of this fraction out of the training
            data (``val_images``/``val_labels``; ``train_images`` exclude it). 0 carves none.
        seed: the validation split's seed (the split depends only on the data, fraction and seed).

    Returns:
        The dataset, train and test (and validation) splits, normalised with the training mean/std.

    Raises:
        ConfigError: the name is unknown (the message lists valid names), or a bad option.
        DataError: the files are missing or unreadable (the message says which and where).
    """
    if image_size is not None and image_size < 1:
        raise ConfigError(f"data.image_size must be a positive number of pixels (or null), got {image_size}")
    from fedcl.data.split import check_val_fraction

    check_val_fraction(val_fraction)
    fn = DATASETS.get(name)
    if image_size is not None and "image_size" in inspect.signature(fn).parameters:
        data = fn(resolve_root(root), download, image_size=image_size)
    else:
        data = fn(resolve_root(root), download)
        if image_size is not None:
            data = _resize(data, image_size)
    if val_fraction > 0:
        from fedcl.data.split import with_validation

        data = with_validation(data, val_fraction, seed)
    return data


def load_dataset_from_config(name: str, cfg: Any) -> ImageData:
    """:func:`load_dataset` with the options of a :class:`fedcl.config.DataConfig` (``data.*`` keys)."""
    return load_dataset(name, cfg.root, download=cfg.download, image_size=getattr(cfg, "image_size", None),
                        val_fraction=getattr(cfg, "val_fraction", 0.0))
