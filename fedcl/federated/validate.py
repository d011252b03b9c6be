"""Server-side checks of an untrusted client summary, before any of it is used."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fedcl.errors import SummaryRejected
from fedcl.federated.codec import (
    CODECS,
    MEMORY_KEYS,
    decode_memory_tensors,
    decode_summary,
    image_dtype,
    memory_array_keys,
)

__all__ = ["SummarySpec", "default_max_bytes", "memory_max_bytes", "validate_memory_summary", "validate_reply",
           "validate_summary"]


@dataclass(frozen=True)
class SummarySpec:
    """What a valid summary of this run looks like.

    Attributes:
        image_shape: ``(C, H, W)`` of the dataset.
        num_classes: labels must lie in ``[0, num_classes)``.
        max_images: at most this many images in one summary (e.g. ``ipc * num_classes``); for a summary
            of memories, at most this many images' worth of storage (the sum of ``ipc`` times classes).
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


def _description(text: object, group: str, spec: SummarySpec) -> dict:
    """One group's memory description, checked against the run before any tensor is read."""
    import json

    from fedcl.distill.memory import list_memories

    try:
        desc = json.loads(str(text))
    except json.JSONDecodeError as exc:
        raise SummaryRejected(f"memory {group}: description is not JSON ({exc})") from None
    if not isinstance(desc, dict) or set(desc) != set(MEMORY_KEYS):
        raise SummaryRejected(f"memory {group}: description must hold exactly {', '.join(MEMORY_KEYS)}")
    if desc["param"] not in list_memories():
        raise SummaryRejected(f"memory {group}: unknown param {desc['param']!r}")
    classes, ipc, shape = desc["classes"], desc["ipc"], desc["image_shape"]
    if not (isinstance(classes, list) and classes and all(type(c) is int for c in classes)
            and len(set(classes)) == len(classes)):
        raise SummaryRejected(f"memory {group}: classes must be distinct class indices")
    if min(classes) < 0 or max(classes) >= spec.num_classes:
        raise SummaryRejected(f"memory {group}: labels outside [0, {spec.num_classes})")
    if not (isinstance(shape, list) and tuple(shape) == tuple(spec.image_shape)):
        raise SummaryRejected(f"memory {group}: decodes to images of shape {shape}; the run's images are "
                              f"{list(spec.image_shape)}")
    if type(ipc) is not int or ipc < 1 or not isinstance(desc["param_kwargs"], dict) \
            or type(desc["soft_labels"]) is not bool:
        raise SummaryRejected(f"memory {group}: ipc, param_kwargs or soft_labels malformed")
    return desc


def validate_memory_summary(record, descriptions: dict[str, object], codec: str,
                            spec: SummarySpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a summary of parameterised memories against ``spec``, rebuild and decode it.

    The descriptions are checked first (known parameterisation, classes in the label space, the
    run's image shape, a storage budget within ``spec.max_images`` images per summary, disjoint
    classes); then the arrays' names, serialisation and dtypes, and the byte cap; then the
    tensors are decoded with ``allow_pickle=False`` and the memories rebuilt
    (:func:`fedcl.distill.memory.load_memory`: every tensor's shape must be the one its
    description gives) and decoded to images, whose values are checked.

    Args:
        record: the reply's ``ArrayRecord`` (``m{g}/NAME``, ``m{g}.scale/NAME``).
        descriptions: the reply's memory ``ConfigRecord`` (``m{g}``: JSON description).
        codec: the codec the client says it used.
        spec: the run's expectations.

    Returns:
        float32 decoded images ``(N, C, H, W)`` and labels: int64 ``(N,)``, or float32
        ``(N, num_classes)`` distributions when the memories carry soft labels.

    Raises:
        SummaryRejected: with the reason.
    """
    from fedcl.distill.memory import create_memory, load_memory
    from fedcl.errors import ConfigError, DataError

    if codec not in CODECS:
        raise SummaryRejected(f"unknown codec {codec!r}")
    if not descriptions or len(descriptions) > spec.num_classes:
        raise SummaryRejected(f"{len(descriptions)} memories; expected 1 to {spec.num_classes}")
    descs = {g: _description(text, g, spec) for g, text in sorted(descriptions.items())}
    seen: set[int] = set()
    for g, d in descs.items():
        if seen & set(d["classes"]):
            raise SummaryRejected(f"memory {g}: a class appears in two memories")
        seen |= set(d["classes"])
    budget = sum(d["ipc"] * len(d["classes"]) for d in descs.values())
    if budget > spec.max_images:
        raise SummaryRejected(f"memories store {budget} images' worth, more than the {spec.max_images} allowed")
    size = record.count_bytes()
    if size > spec.max_bytes:
        raise SummaryRejected(f"summary is {size} bytes, over the cap of {spec.max_bytes}")
    names: dict[str, list[str]] = {}
    for g, d in descs.items():
        try:  # the tensors a memory of this description stores (built empty: nothing decoded yet)
            skeleton = create_memory(d["param"], d["classes"], d["ipc"], tuple(d["image_shape"]), **d["param_kwargs"])
        except ConfigError as exc:
            raise SummaryRejected(f"memory {g}: {exc}") from None
        names[g] = [n for n, _ in skeleton.named_parameters()] + (["label_logits"] if d["soft_labels"] else [])
    keys = {g: [memory_array_keys(g, n) for n in ns] for g, ns in names.items()}
    expected = {k for pairs in keys.values() for pair in pairs for k in pair}
    if set(record.keys()) != expected:
        raise SummaryRejected(f"unexpected arrays {sorted(set(record.keys()) ^ expected)[:4]} for the memories "
                              "described")
    for data_key, scale_key in (pair for pairs in keys.values() for pair in pairs):
        for key, want in ((data_key, image_dtype(codec)), (scale_key, "float32")):
            arr = record[key]
            if arr.stype != "numpy.ndarray" or arr.dtype != want:
                raise SummaryRejected(f"{key}: {arr.stype} {arr.dtype}; expected numpy.ndarray {want}")
        if tuple(record[scale_key].shape) != (2,):
            raise SummaryRejected(f"{scale_key}: shape {tuple(record[scale_key].shape)}; expected (2,)")
    images, labels = [], []
    for g, d in descs.items():
        try:
            tensors = decode_memory_tensors(record, g, names[g], codec)
        except Exception as exc:  # a corrupt npy payload
            raise SummaryRejected(f"memory {g}: undecodable arrays: {exc}") from None
        if not all(torch.isfinite(t).all() for t in tensors.values()):
            raise SummaryRejected(f"memory {g}: stored tensors contain NaN or infinite values")
        if "label_logits" in tensors and tuple(tensors["label_logits"].shape[1:]) != (spec.num_classes,):
            raise SummaryRejected(f"memory {g}: soft labels over {tuple(tensors['label_logits'].shape[1:])} classes; "
                                  f"the run has {spec.num_classes}")
        try:
            memory = load_memory(d, tensors)
        except DataError as exc:
            raise SummaryRejected(f"memory {g}: {exc}") from None
        with torch.no_grad():
            x, y = memory().float(), memory.labels().float() if d["soft_labels"] else memory.labels()
        if tuple(x.shape[1:]) != tuple(spec.image_shape):  # a parameterisation that decodes elsewhere
            raise SummaryRejected(f"memory {g}: decodes to images of shape {list(x.shape[1:])}; the run's images "
                                  f"are {list(spec.image_shape)}")
        images.append(x)
        labels.append(y)
    x = torch.cat(images)
    soft = any(y.ndim == 2 for y in labels)
    y = torch.cat([torch.nn.functional.one_hot(y, spec.num_classes).float() if soft and y.ndim == 1 else y
                   for y in labels])
    if not torch.isfinite(x).all():
        raise SummaryRejected("images contain NaN or infinite values")
    if x.numel() and float(x.abs().max()) > spec.max_abs:
        raise SummaryRejected(f"image values exceed +-{spec.max_abs:g}")
    return x, y


def memory_max_bytes(param: str, param_kwargs: dict, soft_labels: bool, max_images: int, num_classes: int,
                     image_shape: tuple[int, int, int]) -> int:
    """A byte cap for a summary of memories: ``max_images`` images' worth of float32 storage, the soft
    labels of every image those memories decode to (when learned), and the arrays' overhead for up
    to one memory per class."""
    from fedcl.distill.memory import create_memory

    ipc = max(1, max_images // num_classes)
    ref = create_memory(param, list(range(num_classes)), ipc, image_shape, **param_kwargs)
    soft = ref.per_class * num_classes * num_classes if soft_labels else 0
    arrays = 2 * (len(list(ref.parameters())) + int(soft_labels)) * num_classes  # each with its npy header
    return int(4 * (max_images * math.prod(image_shape) + soft) + 256 * arrays + 4096)


def validate_reply(content, codec: str, spec: SummarySpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Check and decode the summary of a client's reply (a ``RecordDict`` with a ``summary`` ``ArrayRecord``):
    a summary of memories (:func:`validate_memory_summary`) when it carries their descriptions in a
    ``summary-memory`` ``ConfigRecord``, else one of images (:func:`validate_summary`).

    Raises:
        SummaryRejected: with the reason.
    """
    if "summary-memory" in content.config_records:
        return validate_memory_summary(content["summary"], dict(content["summary-memory"]), codec, spec)
    return validate_summary(content["summary"], codec, spec)
