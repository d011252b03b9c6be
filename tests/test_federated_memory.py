"""Summaries of parameterised memories: a client sends what its memories store, the server rebuilds them.

No simulation: fedcl's client-side distillation and codec, the server's validation, and the
summary strategy on real Flower messages.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from fedcl.errors import SummaryRejected
from fedcl.federated.codec import encode_memory_summary
from fedcl.federated.config import FederatedConfig
from fedcl.federated.task import distill_partition
from fedcl.federated.validate import SummarySpec, memory_max_bytes, validate_memory_summary

TINY = {"iterations": 2, "batch_real": 8, "width": 8, "ipc": 2}


def _client(digits, sevens: int = 1, **kw):
    """A client with 40 images of class 3 and ``sevens`` of class 7 (with one: two groups, ipc 2 and ipc 1)."""
    idx = torch.cat([torch.nonzero(digits.train_labels == 3)[:40, 0],
                     torch.nonzero(digits.train_labels == 7)[:sevens, 0]])
    s = FederatedConfig(**{**TINY, **kw})
    _, _, groups = distill_partition(s, digits.train_images[idx], digits.train_labels[idx], digits, seed=0)
    return s, [g["set"] for g in groups]


def _spec(s: FederatedConfig, digits) -> SummarySpec:
    max_images = s.ipc * digits.num_classes  # as the ServerApp sets it
    return SummarySpec(digits.image_shape, digits.num_classes, max_images,
                       memory_max_bytes(s.param, s.param_kwargs, s.soft_labels, max_images, digits.num_classes,
                                        digits.image_shape))


@pytest.mark.parametrize(("kw", "codec"), [({"param": "idc", "param_kwargs": {"factor": 2}, "soft_labels": True},
                                            "float32"),
                                           ({"param": "haba", "param_kwargs": {"hallucinators": 2, "hidden": 2},
                                             "ipc": 3, "sevens": 40}, "float32"),
                                           ({"param": "idc"}, "float16")])
def test_the_server_decodes_what_the_client_stored(digits, kw, codec) -> None:
    s, sets = _client(digits, **kw)
    record, descriptions = encode_memory_summary([syn.memory for syn in sets], codec)
    # what travels is the stored parameterisation, bytes counted: no decoded image is sent
    stored = sum(syn.memory.stored_numel() for syn in sets)
    assert not any("images" == k for k in record.keys())
    per_number = 4 if codec == "float32" else 2
    assert per_number * stored <= record.count_bytes() < per_number * stored + 200 * len(record.keys())
    decoded = sum(syn.images.numel() for syn in sets)
    if s.param == "idc":  # four decoded images from each stored one: a quarter of the pixels travel
        assert 4 * sum(record[f"m{g}/images"].numpy().size for g in range(len(sets))) == decoded
    x, y = validate_memory_summary(record, dict(descriptions), codec, _spec(s, digits))
    want_x = torch.cat([syn.images for syn in sets])
    assert x.shape == want_x.shape and x.shape[1:] == digits.image_shape
    assert torch.allclose(x, want_x, atol=1e-6 if codec == "float32" else 2e-2)
    if s.soft_labels:  # distributions over the run's classes, one per decoded image
        assert y.shape == (len(x), digits.num_classes) and torch.allclose(y, torch.cat([syn.labels for syn in sets]))
    else:
        assert torch.equal(y, torch.cat([syn.labels for syn in sets]))
    assert sorted(set((y.argmax(1) if y.ndim == 2 else y).tolist())) == [3, 7]


def _tampered(digits, what: str):
    s, sets = _client(digits, param="idc")
    record, descriptions = encode_memory_summary([syn.memory for syn in sets], "float32")
    descriptions = dict(descriptions)
    desc = json.loads(descriptions["m0"])
    if what == "declared_shape":  # a memory that says it decodes to 16x16 images
        desc["image_shape"] = [1, 16, 16]
    elif what == "stored_shape":  # the description is the run's, the stored tensor decodes to 16x16 images
        big = torch.nn.functional.interpolate(torch.from_numpy(record["m0/images"].numpy()), size=(16, 16))
        record["m0/images"] = Array(big.numpy())
    elif what == "classes":
        desc["classes"] = [12]
    elif what == "param":
        desc["param"] = "pickle"
    elif what == "nan":
        t = record["m0/images"].numpy().copy()
        t[0, 0, 0, 0] = float("nan")
        record["m0/images"] = Array(t)
    elif what == "extra":
        record["m0/evil"] = Array(record["m0/images"].numpy())
    descriptions["m0"] = json.dumps(desc)
    return s, record, descriptions


@pytest.mark.parametrize(("what", "reason"), [
    ("declared_shape", "decodes to images of shape [1, 16, 16]; the run's images are [1, 8, 8]"),
    ("stored_shape", "stored tensor 'images' has shape (1, 1, 16, 16)"),
    ("classes", "labels outside [0, 10)"),
    ("param", "unknown param 'pickle'"),
    ("nan", "NaN"),
    ("extra", "unexpected arrays"),
])
def test_a_memory_that_does_not_fit_the_run_is_rejected_with_its_reason(digits, what, reason) -> None:
    s, record, descriptions = _tampered(digits, what)
    with pytest.raises(SummaryRejected, match=reason.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        validate_memory_summary(record, descriptions, "float32", _spec(s, digits))


def _reply(content: dict, node: int, monkeypatch: pytest.MonkeyPatch) -> Message:
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_node_id", node)  # the reply's source node
    return Message(RecordDict(content), dst_node_id=0, message_type=MessageType.TRAIN)


def test_the_strategy_drops_a_memory_that_does_not_decode_to_the_run_images(digits, monkeypatch) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    from strategies.summaries import OneShotSummaries

    for name, value in (("_task_id", 1), ("_run_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)
    s, sets = _client(digits, param="idc")
    good, good_desc = encode_memory_summary([syn.memory for syn in sets], "float32")
    _, bad, bad_desc = _tampered(digits, "stored_shape")
    replies = [_reply({"summary": good, "summary-memory": good_desc, "metrics": MetricRecord({"num-examples": 41})},
                      11, monkeypatch),
               _reply({"summary": bad, "summary-memory": ConfigRecord(bad_desc)}, 12, monkeypatch)]
    trained: list[tuple[torch.Tensor, torch.Tensor]] = []
    strategy = OneShotSummaries(lambda x, y, arrays, r: trained.append((x, y)) or ArrayRecord(), _spec(s, digits),
                                min_summaries=1)
    strategy._asked = {11, 12}  # what configure_train records
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("flwr").addHandler(handler)
    try:
        _, metrics = strategy.aggregate_train(1, replies)
    finally:
        logging.getLogger("flwr").removeHandler(handler)
    assert [d["node"] for d in strategy.dropped] == [12] and "stored tensor 'images'" in strategy.dropped[0]["reason"]
    assert any("dropped the summary of node 12" in line and "stored tensor" in line for line in lines)
    x, y = trained[0]
    assert len(x) == sum(len(syn) for syn in sets) and metrics["valid-summaries"] == 1
    assert strategy.union_class_images[3] == 2 * 4 and strategy.union_class_images[7] == 1 * 4  # idc: 4 per stored
