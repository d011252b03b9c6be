"""Server-side checks of an untrusted client summary, before any of it is used."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fedcl.errors import SummaryRejected
from fedcl.federated.codec import CODECS, decode_summary, image_dtype

__all__ = ["SummarySpec", "default_max_bytes", "validate_summary"]


@dataclass(frozen=True)
class SummarySpec:
    """What a valid summary of this run looks like.

    Attributes:
        image_shape: ``(C, H, W)`` of the dataset.
        num_classes: labels must lie in ``[0, num_classes)``.
        max_images: at most this many images in one summary (e.g. ``ipc * num_classes``).
        max_bytes: at most this many bytes (``ArrayRecord.count_bytes``).
        max_abs: images (normalised) must lie within ``[-max_abs, max_abs]``.
    """

    image_shape: tuple[int, int, int]
    num_classes: int
    max_images: int
    max_bytes: int
    max_abs: float = 1e4


def validate_summary(record, codec: str, spec: SummarySpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a summary ``ArrayRecord`` against ``spec`` and decode it.

    The declared dtypes and shapes are checked first (cheap, no decoding); then the
    arrays are decoded with ``allow_pickle=False`` and their values checked.

    Args:
        record: the reply's ``ArrayRecord``.
        codec: the codec the client says it used.
        spec: the run's expectations.

    Returns:
        float32 images ``(N, C, H, W)`` and int64 labels ``(N,)``.

    Raises:
        SummaryRejected: with the reason (wrong keys, dtype, shape, too many images or
            bytes, labels out of range, non-finite values).
    """
    if codec not in CODECS:
        raise SummaryRejected(f"unknown codec {codec!r}")
    if set(record.keys()) != {"images", "labels", "scale"}:
        raise SummaryRejected(f"unexpected arrays {sorted(record.keys())}; expected images, labels, scale")
    size = record.count_bytes()
    if size > spec.max_bytes:
        raise SummaryRejected(f"summary is {size} bytes, over the cap of {spec.max_bytes}")
    img, lab, scale = record["images"], record["labels"], record["scale"]
    for name, arr in (("images", img), ("labels", lab), ("scale", scale)):
        if arr.stype != "numpy.ndarray":
            raise SummaryRejected(f"{name}: unsupported serialisation {arr.stype!r}")
    if img.dtype != image_dtype(codec) or lab.dtype != "int16" or scale.dtype != "float32":
        raise SummaryRejected(f"dtypes images={img.dtype} labels={lab.dtype} scale={scale.dtype}; "
                              f"expected {image_dtype(codec)}, int16, float32")
    shape = tuple(img.shape)
    if len(shape) != 4 or shape[1:] != tuple(spec.image_shape):
        raise SummaryRejected(f"images have shape {shape}; expected (N, {', '.join(map(str, spec.image_shape))})")
    if tuple(lab.shape) != (shape[0],) or tuple(scale.shape) != (2,):
        raise SummaryRejected(f"labels shape {tuple(lab.shape)} / scale shape {tuple(scale.shape)} do not match {shape[0]} images")
    if shape[0] > spec.max_images:
        raise SummaryRejected(f"{shape[0]} images, more than the {spec.max_images} allowed")
    try:
        images, labels = decode_summary(record, codec)
    except SummaryRejected:
        raise
    except Exception as exc:  # a corrupt npy payload
        raise SummaryRejected(f"undecodable arrays: {exc}") from None
    if tuple(images.shape) != shape or tuple(labels.shape) != (shape[0],):
        raise SummaryRejected("decoded arrays do not match their declared shapes")
    if not np.isfinite(scale.numpy()).all():
        raise SummaryRejected("quantisation scale is not finite")
    if not torch.isfinite(images).all():
        raise SummaryRejected("images contain NaN or infinite values")
    if images.numel() and float(images.abs().max()) > spec.max_abs:
        raise SummaryRejected(f"image values exceed +-{spec.max_abs:g}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= spec.num_classes):
        raise SummaryRejected(f"labels outside [0, {spec.num_classes})")
    return images, labels


def default_max_bytes(spec_images: int, image_shape: tuple[int, int, int]) -> int:
    """A byte cap that fits ``spec_images`` float32 images plus labels and record overhead."""
    return int(spec_images * (4 * math.prod(image_shape) + 2) + 4096)
