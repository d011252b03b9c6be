"""SyntheticSet: the distilled memory, saved as safetensors plus JSON metadata (no pickle)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedcl.errors import DataError

__all__ = ["FORMAT", "SyntheticSet"]

FORMAT = "fedcl.synthetic/1"


@dataclass
class SyntheticSet:
    """A small labelled set of (usually synthetic) images.

    Attributes:
        images: float32 ``(N, C, H, W)``, in the source dataset's normalisation.
        labels: int64 ``(N,)`` class indices.
        num_classes: number of classes of the source dataset.
        meta: JSON-serialisable facts: ``method``, ``dataset``, ``ipc``, ``image_shape``,
            ``mean``, ``std``, ``seed``, ``fedcl_version``, ``privacy`` (or None) ...
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise DataError(f"synthetic images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(f"labels shape {tuple(self.labels.shape)} does not match {self.images.shape[0]} images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def class_counts(self) -> list[int]:
        """Images per class."""
        return torch.bincount(self.labels.cpu(), minlength=self.num_classes).tolist()

    def to(self, device: torch.device | str) -> SyntheticSet:
        """A copy on ``device``."""
        return SyntheticSet(self.images.to(device), self.labels.to(device), self.num_classes, dict(self.meta))

    def denormalized(self) -> torch.Tensor:
        """Images mapped back to ``[0, 1]`` pixels with the recorded mean/std."""
        c = self.images.shape[1]
        mean = torch.tensor(self.meta.get("mean", [0.0] * c), dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.meta.get("std", [1.0] * c), dtype=torch.float32).view(1, -1, 1, 1)
        return (self.images.detach().float().cpu() * std + mean).clamp(0, 1)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``images`` and ``labels`` as safetensors, ``meta`` as JSON in its header.

        The file is written to a temporary name first and renamed, so a failed write
        leaves nothing half-written.
        """
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"format": FORMAT, "num_classes": str(self.num_classes), "meta": json.dumps(self.meta, sort_keys=True)}
        tensors = {"images": self.images.detach().float().cpu().contiguous(),
                   "labels": self.labels.detach().long().cpu().contiguous()}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=header)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SyntheticSet:
        """Read a file written by :meth:`save`; refuses anything else with a DataError."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise DataError(f"no such synthetic set: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                if header.get("format") != FORMAT:
                    raise DataError(f"{path} is not a fedcl synthetic set (format {header.get('format')!r}, expected {FORMAT!r})")
                images, labels = f.get_tensor("images"), f.get_tensor("labels")
            meta = json.loads(header.get("meta", "{}"))
            num_classes = int(header["num_classes"])
        except DataError:
            raise
        except Exception as exc:  # safetensors raises several types on corrupt input
            raise DataError(f"{path} is not a readable fedcl synthetic set: {exc}") from exc
        if images.dtype != torch.float32 or labels.dtype != torch.int64:
            raise DataError(f"{path}: unexpected dtypes images={images.dtype} labels={labels.dtype}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise DataError(f"{path}: labels outside [0, {num_classes})")
        if not torch.isfinite(images).all():
            raise DataError(f"{path}: images contain NaN or infinite values")
        return cls(images, labels, num_classes, meta)
