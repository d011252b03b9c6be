"""The in-memory dataset every fedcl component consumes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

__all__ = ["ImageData"]


@dataclass
class ImageData:
    """A normalised image classification dataset held as tensors.

    Attributes:
        name: registry name (``digits``, ``mnist`` ...).
        train_images: float32 ``(N, C, H, W)``, normalised with ``mean``/``std``.
        train_labels: int64 ``(N,)`` in ``[0, num_classes)``.
        test_images: float32 ``(M, C, H, W)``, same normalisation.
        test_labels: int64 ``(M,)``.
        num_classes: number of classes.
        mean: per-channel mean used for normalisation.
        std: per-channel std used for normalisation.
        class_names: readable class names.
        val_images: a validation split carved from the training data (``data.val_fraction``),
            same normalisation; None when there is none. ``train_images`` then exclude it.
        val_labels: int64 labels of ``val_images``.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] = field(default_factory=list)
    val_images: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.train_images.shape[1:]
        return int(c), int(h), int(w)

    def class_counts(self) -> list[int]:
        """Number of training images per class."""
        return torch.bincount(self.train_labels, minlength=self.num_classes).tolist()

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Map normalised images back to ``[0, 1]`` pixel space (clamped)."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return (images * std + mean).clamp(0, 1)

    def subset(self, indices: torch.Tensor, name: str | None = None) -> ImageData:
        """A dataset with the given training indices and the same test (and validation) set."""
        return ImageData(
            name=name or self.name,
            train_images=self.train_images[indices],
            train_labels=self.train_labels[indices],
            test_images=self.test_images,
            test_labels=self.test_labels,
            num_classes=self.num_classes,
            mean=self.mean,
            std=self.std,
            class_names=list(self.class_names),
            val_images=self.val_images,
            val_labels=self.val_labels,
        )

    def for_evaluation(self, split: str = "test") -> ImageData:
        """This dataset with ``split`` (``test`` or ``val``) in the place of the test set.

        Evaluation code reads ``test_images``; ``for_evaluation("val")`` lets it measure on the
        validation split instead (to choose settings) without a second code path.

        Raises:
            ConfigError: ``split`` is neither, or ``val`` without a validation split.
        """
        from fedcl.data.split import check_eval_split

        check_eval_split(split, 0.0 if self.val_images is None else 1.0)
        if split == "test":
            return self
        return replace(self, test_images=self.val_images, test_labels=self.val_labels)
