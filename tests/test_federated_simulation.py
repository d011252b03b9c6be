"""Flower simulations (run_simulation, Ray backend) on digits with tiny settings.

Clients misbehave through a ClientApp of this module (:func:`faulty_client_app`): fedcl's own
client logic, whose reply is then corrupted (NaN images, wrong shapes, out-of-range labels,
oversized summaries, wrong dtype); the server must drop exactly those summaries, say why, and
go on, or stop clearly below ``min_summaries``. Nothing of this reaches fedcl's ClientApp or
its run config. A DP client over its privacy budget refuses, and the run goes on.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from flwr.app import Array, Context, Message
from flwr.clientapp import ClientApp

from fedcl.data import load_dataset
from fedcl.errors import SummaryRejected
from fedcl.federated.command import FederatedConfig, main, run_federated
from fedcl.privacy import PrivacyConfig

pytestmark = pytest.mark.slow

TINY = {"iterations": 5, "width": 16, "server_epochs": 20, "central_epochs": 2, "threads": 1, "ipc": 3}


def _cfg(**kw) -> FederatedConfig:
    return FederatedConfig(**{**TINY, **kw})


def faulty_client_app(faults: dict[int, str]) -> ClientApp:
    """fedcl's ClientApp, except that partition ``p`` corrupts its summary the way ``faults[p]`` says,
    as a buggy or malicious client would (``nan``, ``shape``, ``labels``, ``oversize``, ``dtype``;
    float32 codec). Everything it needs is imported inside, so Ray pickles it whole."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        from fedcl.federated.client_app import train as fedcl_train
        from fedcl.federated.codec import decode_summary, encode_summary

        reply = fedcl_train(msg, context)
        kind = faults.get(int(context.node_config["partition-id"]))
        if not kind:
            return reply
        x, y = decode_summary(reply.content["summary"], "float32")
        if kind == "nan":
            x[0] = float("nan")
        elif kind == "shape":
            x = torch.nn.functional.pad(x, (0, 1, 0, 1))
        elif kind == "labels":
            y[0] = 10 + 3
        elif kind == "oversize":
            x, y = x.repeat(50, 1, 1, 1), y.repeat(50)
        record = encode_summary(x, y, "float32")
        if kind == "dtype":
            record["images"] = Array(x.double().numpy())
        reply.content["summary"] = record
        return reply

    return app


def test_bad_summaries_are_dropped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    cfg = _cfg(num_clients=6, strategies=["oneshot"], partition="iid", centralised=False)
    faults = {0: "nan", 1: "shape", 2: "labels", 3: "oversize", 4: "dtype"}
    caplog.set_level(logging.WARNING, logger="flwr")
    r = run_federated(cfg, client_app=faulty_client_app(faults))["strategies"]["oneshot"]
    assert r["dropped_summaries"] == 5 and r["refused_summaries"] == 0
    reasons = " | ".join(d["reason"] for d in r["dropped"])
    for words in ("NaN", "shape", "labels outside", "over the cap"):
        assert words in reasons
    # the float64 summary is caught by the byte cap (twice the float32 bytes) before its dtype
    assert sum("over the cap" in d["reason"] or "dtypes" in d["reason"] for d in r["dropped"]) == 2
    logged = [rec.getMessage() for rec in caplog.records if "dropped the summary of node" in rec.getMessage()]
    assert len(logged) == 5 and all(any(d["reason"] in m for m in logged) for d in r["dropped"])
    assert r["summary_images"] == 30  # the one good client: 3 images x 10 classes (iid)
    assert r["summary_class_images"] == [3] * 10  # the dropped summaries are not in the union
    assert r["final_accuracy"] > 0.15
    # per-class accuracy, weighted by the test set's class counts, is the overall accuracy
    test_labels = load_dataset("digits").test_labels
    counts = torch.bincount(test_labels, minlength=10).tolist()
    assert len(r["class_accuracy"]) == 10
    weighted = sum(a * n for a, n in zip(r["class_accuracy"], counts)) / sum(counts)
    assert weighted == pytest.approx(r["final_accuracy"], abs=1e-9)


def test_run_fails_clearly_below_the_minimum_of_valid_summaries() -> None:
    cfg = _cfg(num_clients=3, strategies=["oneshot"], partition="iid", centralised=False, min_summaries=2)
    with pytest.raises(SummaryRejected, match="only 1 valid summaries, fewer than the minimum 2"):
        run_federated(cfg, client_app=faulty_client_app({0: "nan", 1: "labels"}))


def test_a_client_over_its_budget_refuses_and_the_run_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    # epsilon 1 per release, a budget of 1.2: room for one release, so rounds 2 and 3 are refused
    cfg = _cfg(num_clients=2, strategies=["feddm"], feddm_rounds=3, partition="iid", centralised=False,
               batch_real=32, dp_min_class_images=10, privacy=PrivacyConfig(epsilon=1.0, budget=1.2))
    caplog.set_level(logging.WARNING, logger="flwr")
    r = run_federated(cfg)["strategies"]["feddm"]
    assert r["rounds"] == 3 and len(r["accuracy_per_round"]) == 4  # the run completed
    assert r["dropped_summaries"] == 0 and r["refused_summaries"] == 4  # 2 clients x rounds 2, 3
    assert sorted(d["round"] for d in r["refused"]) == [2, 2, 3, 3]
    assert all("budget" in d["reason"] for d in r["refused"])
    assert sum("refused its summary" in rec.getMessage() for rec in caplog.records) == 4
    # round 1's summaries arrived and trained the model; refused rounds keep it as it is
    assert r["summary_images"] == 2 * 30 and r["uplink_bytes_per_round"][0] > 0
    assert r["accuracy_per_round"][1] == r["accuracy_per_round"][2] == r["accuracy_per_round"][3]
    table = r["privacy_per_client"]
    assert set(table) == {"0", "1"}
    for row in table.values():
        assert row["releases"] == 1 and row["refused"] == 2 and row["budget"] == 1.2
        assert 0.9 < row["epsilon"] <= 1.2


def test_command_writes_the_run_folder(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = [f"{k}={v}" for k, v in TINY.items()] + [
        "num_clients=3", "strategies=[oneshot,feddm,fedavg]", "rounds=2", "feddm_rounds=2", "codec=float16",
        f"out={out}"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "config.yaml").is_file() and (out / "results.md").is_file()
    assert (out / "accuracy_vs_bytes.png").stat().st_size > 1000
    s = metrics["strategies"]
    assert set(s) == {"oneshot", "feddm", "fedavg"}
    for r in s.values():
        assert {"final_accuracy", "accuracy_per_round", "uplink_bytes", "downlink_bytes", "rounds",
                "dropped_summaries", "refused_summaries", "privacy_per_client"} <= set(r)
        assert 0.0 <= r["final_accuracy"] <= 1.0
        assert r["refused_summaries"] == 0 and r["privacy_per_client"] == {}  # no DP: nothing spent, nothing refused
    assert s["fedavg"]["rounds"] == 2 and len(s["fedavg"]["accuracy_per_round"]) == 3
    assert s["oneshot"]["downlink_bytes"] == 0 < s["fedavg"]["downlink_bytes"]
    # FedDM sends the global model down each round and gets a summary back from each client
    assert s["feddm"]["rounds"] == 2 and len(s["feddm"]["uplink_bytes_per_round"]) == 2
    assert s["feddm"]["downlink_bytes"] > 0 and s["feddm"]["dropped_summaries"] == 0
    # a float16 summary is far smaller than two rounds of model weights
    assert s["oneshot"]["uplink_bytes"] * 5 < s["fedavg"]["uplink_bytes"]
    assert 0.0 <= metrics["centralised"]["final_accuracy"] <= 1.0
    # FedAvg trains on no summaries; the per-class table names every strategy
    assert s["fedavg"]["summary_class_images"] is None and sum(s["feddm"]["summary_class_images"]) > 0
    assert sum(s["oneshot"]["summary_class_images"]) == s["oneshot"]["summary_images"]  # the whole union
    assert "| fedavg | " in (out / "results.md").read_text().split("Final accuracy on each class")[1]
    assert "oneshot" in capsys.readouterr().out
