"""SyntheticSet: the distilled memory, saved as safetensors plus JSON metadata (no pickle).

File formats (the ``format`` entry of the safetensors header):

- ``fedcl.synthetic/1``: tensors ``images`` and ``labels`` (int64), ``meta`` as JSON (still read).
- ``fedcl.synthetic/2`` (written now): a set made by an engine stores its *memory* (the stored
  tensors of its parameterisation, ``memory.<name>``, and soft-label logits if learned) with
  the memory's description in ``meta["memory"]``; loading rebuilds the memory and decodes it.
  A set without a memory stores ``images`` and ``labels`` (int64, or float soft labels).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fedcl.errors import DataError
from fedcl.utils import read_safetensors, save_safetensors

if TYPE_CHECKING:
    from fedcl.distill.memory import Memory

__all__ = ["FORMAT", "FORMATS", "SyntheticSet"]

FORMAT = "fedcl.synthetic/2"
FORMATS = ("fedcl.synthetic/1", FORMAT)  # what load() reads


@dataclass
class SyntheticSet:
    """A small labelled set of (usually synthetic) images.

    Attributes:
        images: float32 ``(N, C, H, W)``, the decoded images, in the source dataset's normalisation.
        labels: int64 ``(N,)`` class indices, or float32 ``(N, num_classes)`` soft labels (rows are
            distributions).
        num_classes: number of classes of the source dataset.
        meta: JSON-serialisable facts: ``method``, ``dataset``, ``ipc``, ``image_shape``,
            ``mean``, ``std``, ``seed``, ``fedcl_version``, ``privacy`` (or None), ``memory``
            (the parameterisation and its storage figures) ...
        memory: the stored parameterisation the images decode from (None: the images are what is stored).
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    meta: dict[str, Any] = field(default_factory=dict)
    memory: Memory | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise DataError(f"synthetic images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        n = self.images.shape[0]
        if self.labels.shape not in ((n,), (n, self.num_classes)):
            raise DataError(f"labels shape {tuple(self.labels.shape)} does not match {n} images "
                            f"((N,) hard or (N, {self.num_classes}) soft)")

    @classmethod
    def from_memory(cls, memory: Memory, num_classes: int, meta: dict[str, Any] | None = None) -> SyntheticSet:
        """The decoded set of ``memory`` (detached copies on the CPU), its description in ``meta["memory"]``."""
        import copy

        with torch.no_grad():
            images, labels = memory().detach().float().cpu(), memory.labels().detach().cpu()
        stored = copy.deepcopy(memory).cpu()
        return cls(images, labels, num_classes, {**(meta or {}), "memory": memory.describe()}, stored)

    @property
    def soft(self) -> bool:
        """True when the labels are distributions over the classes."""
        return self.labels.ndim == 2

    @property
    def hard_labels(self) -> torch.Tensor:
        """Class indices (the most likely class of each soft label)."""
        return self.labels.argmax(1) if self.soft else self.labels

    def stored_bytes(self) -> int:
        """Bytes of what is stored: the memory's tensors as float32 (else images, plus soft labels)."""
        if self.memory is not None:
            return 4 * self.memory.stored_numel()
        return 4 * self.images.numel() + (4 * self.labels.numel() if self.soft else 0)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def class_counts(self) -> list[int]:
        """Images per class."""
        return torch.bincount(self.hard_labels.cpu(), minlength=self.num_classes).tolist()

    def to(self, device: torch.device | str) -> SyntheticSet:
        """A copy on ``device``."""
        return SyntheticSet(self.images.to(device), self.labels.to(device), self.num_classes, dict(self.meta),
                            self.memory)

    def denormalized(self) -> torch.Tensor:
        """Images mapped back to ``[0, 1]`` pixels with the recorded mean/std."""
        c = self.images.shape[1]
        mean = torch.tensor(self.meta.get("mean", [0.0] * c), dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.meta.get("std", [1.0] * c), dtype=torch.float32).view(1, -1, 1, 1)
        return (self.images.detach().float().cpu() * std + mean).clamp(0, 1)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the set as safetensors, ``meta`` as JSON in its header (format ``fedcl.synthetic/2``).

        A set with a memory stores the memory's tensors (``memory.<name>``), not the decoded
        images; otherwise ``images`` and ``labels``. The file is written to a temporary name
        first and renamed, so a failed write leaves nothing half-written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"format": FORMAT, "num_classes": str(self.num_classes), "meta": json.dumps(self.meta, sort_keys=True)}
        if self.memory is not None:
            tensors = {f"memory.{n}": t for n, t in self.memory.stored().items()}
        else:
            labels = self.labels.detach().cpu()
            tensors = {"images": self.images.detach().float().cpu().contiguous(),
                       "labels": (labels.float() if self.soft else labels.long()).contiguous()}
        save_safetensors(tensors, path, header)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SyntheticSet:
        """Read a file written by :meth:`save`; refuses anything else with a DataError."""
        path = Path(path)
        header, tensors = read_safetensors(path, "fedcl synthetic set", formats=FORMATS)
        try:
            meta = json.loads(header.get("meta", "{}"))
            num_classes = int(header["num_classes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: malformed synthetic-set header ({type(exc).__name__}: {exc})") from None
        memory = None
        if "memory" in meta and any(k.startswith("memory.") for k in tensors):
            from fedcl.distill.memory import load_memory

            try:
                memory = load_memory(meta["memory"], {k[len("memory."):]: v for k, v in tensors.items()
                                                      if k.startswith("memory.")})
            except DataError as exc:
                raise DataError(f"{path}: {exc}") from None
            with torch.no_grad():
                images, labels = memory().float(), memory.labels()
        elif "images" in tensors and "labels" in tensors:
            images, labels = tensors["images"], tensors["labels"]
        else:
            raise DataError(f"{path}: neither a stored memory nor images and labels")
        cls._check(path, images, labels, num_classes)
        return cls(images, labels, num_classes, meta, memory)

    @staticmethod
    def _check(path: Path, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
        if images.dtype != torch.float32 or labels.dtype not in (torch.int64, torch.float32):
            raise DataError(f"{path}: unexpected dtypes images={images.dtype} labels={labels.dtype}")
        if labels.dtype == torch.int64 and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise DataError(f"{path}: labels outside [0, {num_classes})")
        if labels.dtype == torch.float32 and (labels.ndim != 2 or labels.shape[1] != num_classes
                                              or not torch.isfinite(labels).all() or (labels < 0).any()
                                              or not torch.allclose(labels.sum(1), torch.ones(len(labels)), atol=1e-3)):
            raise DataError(f"{path}: soft labels must be (N, {num_classes}) rows of probabilities")
        if not torch.isfinite(images).all():
            raise DataError(f"{path}: images contain NaN or infinite values")
