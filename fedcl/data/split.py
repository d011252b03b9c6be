"""A validation split carved from the training data: stratified, seeded, the same for every command."""

from __future__ import annotations

import math

import torch

from fedcl.data.base import ImageData
from fedcl.errors import ConfigError

__all__ = ["EVAL_SPLITS", "check_eval_split", "check_val_fraction", "stratified_holdout", "with_validation"]

EVAL_SPLITS = ("test", "val")


def check_val_fraction(fraction: float) -> None:
    """ConfigError unless ``fraction`` (``data.val_fraction``) is in [0, 1)."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {fraction}")


def check_eval_split(split: str, val_fraction: float) -> None:
    """ConfigError unless ``split`` is ``test``, or ``val`` with ``val_fraction > 0``."""
    if split not in EVAL_SPLITS:
        raise ConfigError(f"eval.split must be one of {', '.join(EVAL_SPLITS)}, got {split!r}")
    if split == "val" and not val_fraction > 0:
        raise ConfigError("eval.split=val needs a validation split: set data.val_fraction (e.g. 0.1)")


def stratified_holdout(labels: torch.Tensor, fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted ``(keep, held_out)`` indices: about ``fraction`` of each class held out, chosen by ``seed``.

    Each class keeps at least one example; the result depends only on ``labels``, ``fraction`` and ``seed``.

    Raises:
        ConfigError: ``fraction`` outside [0, 1), or one that holds out nothing.
    """
    check_val_fraction(fraction)
    labels = labels.reshape(-1).cpu()
    gen = torch.Generator().manual_seed(int(seed))
    held = []
    for c in torch.unique(labels).tolist():  # sorted classes: a fixed order of draws
        idx = (labels == c).nonzero().flatten()
        k = min(int(math.floor(fraction * idx.numel() + 0.5)), idx.numel() - 1)
        held.append(idx[torch.randperm(idx.numel(), generator=gen)[:k]])
    out = torch.cat(held).sort().values if held else torch.zeros(0, dtype=torch.int64)
    if fraction > 0 and out.numel() == 0:
        raise ConfigError(f"data.val_fraction={fraction} holds out no image of {labels.numel()}; use a larger fraction")
    mask = torch.ones(labels.numel(), dtype=torch.bool)
    mask[out] = False
    return mask.nonzero().flatten(), out


def with_validation(data: ImageData, fraction: float, seed: int = 0) -> ImageData:
    """``data`` with a stratified validation split moved out of its training tensors.

    The normalisation is unchanged (computed on the training images as loaded).
    """
    keep, val = stratified_holdout(data.train_labels, fraction, seed)
    if val.numel() == 0:
        return data
    out = data.subset(keep)
    out.val_images, out.val_labels = data.train_images[val], data.train_labels[val]
    return out
