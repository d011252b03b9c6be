"""Summary codec and server-side validation (no Flower processes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from fedcl.errors import ConfigError, SummaryRejected
from fedcl.federated.codec import decode_summary, encode_summary
from fedcl.federated.validate import SummarySpec, default_max_bytes, validate_summary

SHAPE = (1, 8, 8)


def _summary(n: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=g) * 2, torch.arange(n) % 10


def _spec(max_images: int = 100) -> SummarySpec:
    return SummarySpec(SHAPE, 10, max_images, default_max_bytes(max_images, SHAPE))


@pytest.mark.parametrize("codec, tol, ratio", [("float32", 0.0, 1.0), ("float16", 1e-2, 0.5), ("uint8", 0.03, 0.25)])
def test_codec_roundtrip_and_bytes(codec: str, tol: float, ratio: float) -> None:
    x, y = _summary(50)
    rec = encode_summary(x, y, codec)
    images, labels = decode_summary(rec, codec)
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert torch.equal(labels, y)
    span = float(x.max() - x.min())
    assert float((images - x).abs().max()) <= tol * max(span, 1.0) + 1e-7
    payload = len(rec["images"].data)
    assert payload == pytest.approx(ratio * 4 * x.numel(), rel=0.05, abs=200)


def test_float16_and_uint8_save_bytes_over_float32() -> None:
    x, y = _summary(100)
    sizes = {c: encode_summary(x, y, c).count_bytes() for c in ("float32", "float16", "uint8")}
    assert sizes["uint8"] < sizes["float16"] < sizes["float32"]


def test_unknown_codec_is_a_config_error() -> None:
    x, y = _summary()
    with pytest.raises(ConfigError, match="unknown codec"):
        encode_summary(x, y, "bfloat3")


@pytest.mark.parametrize("codec", ["float32", "float16", "uint8"])
def test_valid_summary_passes(codec: str) -> None:
    x, y = _summary()
    images, labels = validate_summary(encode_summary(x, y, codec), codec, _spec())
    assert images.shape == x.shape and torch.equal(labels, y)


def _bad(kind: str) -> tuple[ArrayRecord, str]:
    x, y = _summary()
    if kind == "nan":
        x[3, 0, 2, 2] = float("nan")
    elif kind == "inf":
        x[0] = float("inf")
    elif kind == "shape":
        x = torch.randn(20, 1, 9, 9)
    elif kind == "labels":
        y = y.clone()
        y[0] = 10
    elif kind == "negative":
        y = y.clone()
        y[0] = -1
    elif kind == "too-many":
        x, y = _summary(150)
    rec = encode_summary(x, y, "float32")
    if kind == "dtype":
        rec["images"] = Array(x.double().numpy())
    elif kind == "extra":
        rec["weights"] = Array(np.zeros(3, np.float32))
    elif kind == "label-count":
        rec["labels"] = Array(np.zeros(5, np.int16))
    return rec, kind


@pytest.mark.parametrize("kind, reason", [
    ("nan", "NaN"), ("inf", "NaN or infinite"), ("shape", "shape"), ("labels", "labels outside"),
    ("negative", "labels outside"), ("too-many", "images|cap"), ("dtype", "dtypes"), ("extra", "unexpected arrays"),
    ("label-count", "labels shape"),
])
def test_bad_summaries_are_rejected_with_a_reason(kind: str, reason: str) -> None:
    rec, _ = _bad(kind)
    with pytest.raises(SummaryRejected, match=reason):
        validate_summary(rec, "float32", _spec())


def test_byte_cap() -> None:
    x, y = _summary(20)
    spec = SummarySpec(SHAPE, 10, 100, max_bytes=1000)
    with pytest.raises(SummaryRejected, match="over the cap"):
        validate_summary(encode_summary(x, y), "float32", spec)


def test_codec_mismatch_is_rejected() -> None:
    x, y = _summary()
    with pytest.raises(SummaryRejected, match="dtypes"):
        validate_summary(encode_summary(x, y, "uint8"), "float32", _spec())


def test_pickled_payload_is_refused() -> None:
    x, y = _summary()
    rec = encode_summary(x, y)
    obj = np.array([{"evil": 1}], dtype=object)
    import io

    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=True)
    rec["images"] = Array(dtype="float32", shape=(20, 1, 8, 8), stype="numpy.ndarray", data=buf.getvalue())
    with pytest.raises(SummaryRejected, match="undecodable|match"):
        validate_summary(rec, "float32", _spec())
