"""Summary codec: a :class:`SyntheticSet` <-> a Flower ``ArrayRecord`` (float32, float16 or uint8).

The record holds three numpy arrays, serialised by Flower with ``np.save(allow_pickle=False)``:

- ``images``: ``(N, C, H, W)`` in the codec's dtype (uint8 images are quantised per
  tensor between ``scale[0]`` and ``scale[1]``);
- ``labels``: ``(N,)`` int16 class indices;
- ``scale``: float32 ``(2,)``, the min and max used by ``uint8`` (unused otherwise).

The codec name travels in the reply's ``MetricRecord``/``ConfigRecord``, never inside the
arrays, and :func:`decode_summary` never unpickles anything.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fedcl.errors import ConfigError, SummaryRejected
from fedcl.registry import Registry

__all__ = ["CODECS", "decode_summary", "encode_summary", "image_dtype"]

Encoder = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Decoder = Callable[[np.ndarray, np.ndarray], np.ndarray]

CODECS: Registry[tuple[Encoder, Decoder, str]] = Registry("summary codec")


@CODECS.register("float32")
def _float32() -> tuple[Encoder, Decoder, str]:
    return (lambda x: (x.astype(np.float32), np.zeros(2, np.float32))), (lambda q, s: q.astype(np.float32)), "float32"


@CODECS.register("float16")
def _float16() -> tuple[Encoder, Decoder, str]:
    return (lambda x: (x.astype(np.float16), np.zeros(2, np.float32))), (lambda q, s: q.astype(np.float32)), "float16"


def _quantise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
    span = hi - lo if hi > lo else 1.0
    q = np.clip(np.rint((x - lo) / span * 255.0), 0, 255).astype(np.uint8)
    return q, np.array([lo, lo + span], dtype=np.float32)


def _dequantise(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    lo, hi = float(scale[0]), float(scale[1])
    return (q.astype(np.float32) / 255.0 * (hi - lo) + lo).astype(np.float32)


@CODECS.register("uint8")
def _uint8() -> tuple[Encoder, Decoder, str]:
    return _quantise, _dequantise, "uint8"


def image_dtype(codec: str) -> str:
    """The numpy dtype name a codec sends images as (``float32``, ``float16``, ``uint8``)."""
    return CODECS.create(codec)[2]


def encode_summary(images: torch.Tensor, labels: torch.Tensor, codec: str = "float32"):  # -> ArrayRecord
    """Encode synthetic images and labels as an ``ArrayRecord``.

    Args:
        images: float ``(N, C, H, W)`` tensor (normalised like the dataset).
        labels: int ``(N,)`` tensor.
        codec: ``float32`` (lossless), ``float16`` (half the bytes) or ``uint8`` (a quarter).

    Returns:
        A ``flwr.app.ArrayRecord`` with ``images``, ``labels`` and ``scale``.
    """
    from flwr.app import Array, ArrayRecord

    if codec not in CODECS:
        raise ConfigError(f"unknown codec {codec!r}; valid: {', '.join(CODECS.names())}")
    encode = CODECS.create(codec)[0]
    q, scale = encode(images.detach().float().cpu().numpy())
    return ArrayRecord({
        "images": Array(np.ascontiguousarray(q)),
        "labels": Array(labels.detach().cpu().numpy().astype(np.int16)),
        "scale": Array(scale),
    })


def decode_summary(record, codec: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode an ``ArrayRecord`` written by :func:`encode_summary` (no pickle, no checks of content).

    Use :func:`fedcl.federated.validate.validate_summary` on untrusted records: it checks
    the declared dtypes and shapes before decoding and the values after.

    Returns:
        float32 images ``(N, C, H, W)`` and int64 labels ``(N,)``.

    Raises:
        SummaryRejected: missing arrays or an unknown codec.
    """
    if codec not in CODECS:
        raise SummaryRejected(f"unknown codec {codec!r}")
    missing = {"images", "labels", "scale"} - set(record.keys())
    if missing:
        raise SummaryRejected(f"summary lacks arrays {sorted(missing)}")
    decode = CODECS.create(codec)[1]
    images = decode(record["images"].numpy(), record["scale"].numpy())
    labels = record["labels"].numpy().astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)
