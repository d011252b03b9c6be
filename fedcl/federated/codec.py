"""Summary codec: a :class:`SyntheticSet` <-> a Flower ``ArrayRecord`` (float32, float16 or uint8).

The record holds three numpy arrays, serialised by Flower with ``np.save(allow_pickle=False)``:

- ``images``: ``(N, C, H, W)`` in the codec's dtype (uint8 images are quantised per
  tensor between ``scale[0]`` and ``scale[1]``);
- ``labels``: ``(N,)`` int16 class indices;
- ``scale``: float32 ``(2,)``, the min and max used by ``uint8`` (unused otherwise).

The codec name travels in the reply's ``MetricRecord``/``ConfigRecord``, never inside the
arrays, and :func:`decode_summary` never unpickles anything.

A summary of parameterised memories (``param`` other than ``images``, or soft labels) sends
what the memories store, not their decoded images (:func:`encode_memory_summary`): for each
group ``g`` of the client's classes, every stored tensor ``NAME`` of its memory as
``m{g}/NAME`` (in the codec's dtype, quantised per tensor) with its ``m{g}.scale/NAME``, and
the memory's JSON description (:meth:`fedcl.distill.memory.Memory.describe`) under key
``m{g}`` of a ``ConfigRecord``; the server rebuilds and decodes them with
:func:`fedcl.federated.validate.validate_memory_summary`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fedcl.errors import ConfigError, SummaryRejected
from fedcl.registry import Registry

__all__ = ["CODECS", "MEMORY_KEYS", "decode_memory_tensors", "memory_array_keys", "decode_summary", "encode_memory_summary", "encode_summary",
           "image_dtype"]

#: the description keys a memory summary sends (what :func:`fedcl.distill.memory.load_memory` reads)
MEMORY_KEYS = ("param", "param_kwargs", "classes", "ipc", "image_shape", "soft_labels")


def memory_array_keys(group: str, name: str) -> tuple[str, str]:
    """The ``ArrayRecord`` keys of stored tensor ``name`` of memory ``group`` (``m0`` ...): data, scale."""
    return f"{group}/{name}", f"{group}.scale/{name}"

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


def encode_memory_summary(memories: list, codec: str = "float32"):  # -> tuple[ArrayRecord, ConfigRecord]
    """Encode the stored tensors of a client's memories (one per group of classes) and their descriptions.

    Args:
        memories: :class:`fedcl.distill.memory.Memory` objects (e.g. each group's ``SyntheticSet.memory``).
        codec: as for :func:`encode_summary`, applied to every stored tensor (soft-label logits included).

    Returns:
        An ``ArrayRecord`` (``m{g}/NAME`` and ``m{g}.scale/NAME``) and a ``ConfigRecord`` (``m{g}``: JSON).
    """
    import json

    from flwr.app import Array, ArrayRecord, ConfigRecord

    if codec not in CODECS:
        raise ConfigError(f"unknown codec {codec!r}; valid: {', '.join(CODECS.names())}")
    encode = CODECS.create(codec)[0]
    arrays, descriptions = {}, {}
    for g, memory in enumerate(memories):
        described = memory.describe()
        descriptions[f"m{g}"] = json.dumps({k: described[k] for k in MEMORY_KEYS})
        for name, tensor in memory.stored().items():
            q, scale = encode(tensor.numpy())
            data_key, scale_key = memory_array_keys(f"m{g}", name)
            arrays[data_key], arrays[scale_key] = Array(np.ascontiguousarray(q)), Array(scale)
    return ArrayRecord(arrays), ConfigRecord(descriptions)


def decode_memory_tensors(record, group: str, names: list[str], codec: str) -> dict[str, torch.Tensor]:
    """The float32 stored tensors ``names`` of group ``group`` (``m0`` ...) of a memory summary (no pickle,
    no checks of content)."""
    decode = CODECS.create(codec)[1]
    out = {}
    for name in names:
        data_key, scale_key = memory_array_keys(group, name)
        out[name] = torch.from_numpy(np.ascontiguousarray(decode(record[data_key].numpy(), record[scale_key].numpy())))
    return out
