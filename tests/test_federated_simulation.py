"""Flower simulations (run_simulation, Ray backend) on digits with tiny settings.

Clients misbehave through the ``fault`` run-config hook (NaN images, wrong shapes,
out-of-range labels, oversized summaries, wrong dtype); the server must drop exactly
those summaries, say why, and go on, or stop clearly below ``min_summaries``.
"""

from __future__ import annotations

import json

import pytest
import torch

from fedcl.data import load_dataset
from fedcl.errors import SummaryRejected
from fedcl.federated.command import FederatedConfig, main, run_federated

pytestmark = pytest.mark.slow

TINY = {"iterations": 5, "width": 16, "server_epochs": 20, "central_epochs": 2, "threads": 1, "ipc": 3}


def _cfg(**kw) -> FederatedConfig:
    return FederatedConfig(**{**TINY, **kw})


def test_bad_summaries_are_dropped_and_counted() -> None:
    cfg = _cfg(num_clients=6, strategies=["oneshot"], partition="iid", centralised=False,
               fault="0:nan,1:shape,2:labels,3:oversize,4:dtype")
    r = run_federated(cfg)["strategies"]["oneshot"]
    assert r["dropped_summaries"] == 5
    reasons = " | ".join(d["reason"] for d in r["dropped"])
    for words in ("NaN", "shape", "labels outside", "over the cap"):
        assert words in reasons
    # the float64 summary is caught by the byte cap (twice the float32 bytes) before its dtype
    assert sum("over the cap" in d["reason"] or "dtypes" in d["reason"] for d in r["dropped"]) == 2
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
    cfg = _cfg(num_clients=3, strategies=["oneshot"], partition="iid", centralised=False, min_summaries=2,
               fault="0:nan,1:labels")
    with pytest.raises(SummaryRejected, match="only 1 valid summaries, fewer than the minimum 2"):
        run_federated(cfg)


def test_command_writes_the_run_folder(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = [f"{k}={v}" for k, v in TINY.items()] + [
        "num_clients=3", "strategies=[oneshot,feddm,fedavg]", "rounds=2", "feddm_rounds=2", "codec=float16",
        "server_select=1", f"out={out}"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "config.yaml").is_file() and (out / "results.md").is_file()
    assert (out / "accuracy_vs_bytes.png").stat().st_size > 1000
    s = metrics["strategies"]
    assert set(s) == {"oneshot", "feddm", "fedavg"}
    for r in s.values():
        assert {"final_accuracy", "accuracy_per_round", "uplink_bytes", "downlink_bytes", "rounds",
                "dropped_summaries"} <= set(r)
        assert 0.0 <= r["final_accuracy"] <= 1.0
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
    # server_select=1 trains on one client's summary per class (the smoothest): at most ipc images each
    assert max(s["oneshot"]["summary_class_images"]) <= TINY["ipc"] < s["oneshot"]["summary_images"]
    assert "| fedavg | " in (out / "results.md").read_text().split("Final accuracy on each class")[1]
    assert "oneshot" in capsys.readouterr().out
