"""Flower simulations (``flwr run`` against a simulation SuperLink, Ray backend) on digits with tiny settings.

Clients misbehave through ClientApps of tests/federated_faults.py: fedcl's own client logic,
whose reply is then corrupted (NaN images, wrong shapes, out-of-range labels, oversized
summaries, wrong dtype); the server must drop exactly those summaries, say why, and go on, or
stop clearly below ``min_summaries``. Nothing of this reaches fedcl's ClientApp or its run
config. A DP client over its privacy budget refuses, and the run goes on. The tests share one
simulation SuperLink (a SuperLink starts in seconds; each run starts its own simulation).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedcl.data import load_dataset
from fedcl.errors import ConfigError, SummaryRejected
from fedcl.federated.command import FederatedConfig, FederatedPrivacy, LocalSimulation, main, run_federated

pytestmark = pytest.mark.slow

TINY = {"iterations": 5, "width": 16, "server_epochs": 20, "central_epochs": 2, "threads": 1, "ipc": 3}
FAULTS = Path(__file__).with_name("federated_faults.py")


def _cfg(**kw) -> FederatedConfig:
    return FederatedConfig(**{**TINY, **kw})


@pytest.fixture(scope="module")
def sim():
    with LocalSimulation() as s:
        yield s


def test_bad_summaries_are_dropped_and_counted(sim) -> None:
    cfg = _cfg(num_clients=6, strategies=["oneshot"], partition="iid", centralised=False)
    r = run_federated(cfg, client_app=f"{FAULTS}:five_faults", simulation=sim)["strategies"]["oneshot"]
    assert r["dropped_summaries"] == 5 and r["refused_summaries"] == 0
    reasons = " | ".join(d["reason"] for d in r["dropped"])
    for words in ("NaN", "shape", "labels outside", "over the cap"):
        assert words in reasons
    # the float64 summary is caught by the byte cap (twice the float32 bytes) before its dtype
    assert sum("over the cap" in d["reason"] or "dtypes" in d["reason"] for d in r["dropped"]) == 2
    logged = [line for line in sim.last_log.splitlines() if "dropped the summary of node" in line]
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


def test_run_fails_clearly_below_the_minimum_of_valid_summaries(sim) -> None:
    cfg = _cfg(num_clients=3, strategies=["oneshot"], partition="iid", centralised=False, min_summaries=2)
    with pytest.raises(SummaryRejected, match="only 1 valid summaries, fewer than the minimum 2") as info:
        run_federated(cfg, client_app=f"{FAULTS}:two_faults", simulation=sim)
    assert len(str(info.value).splitlines()) == 1
    # the ServerApp ended with one line, not a traceback
    errors = [line for line in sim.last_log.splitlines() if "fedcl: error:" in line]
    assert len(errors) == 1 and "fewer than the minimum 2" in errors[0] and "Traceback" not in sim.last_log


def test_a_client_over_its_budget_refuses_and_the_run_goes_on(sim) -> None:
    # epsilon 1 per release, a budget of 1.2: room for one release, so rounds 2 and 3 are refused
    cfg = _cfg(num_clients=2, strategies=["feddm"], feddm_rounds=3, partition="iid", centralised=False,
               batch_real=32, dp_min_class_images=10, privacy=FederatedPrivacy(epsilon=1.0, budget=1.2))
    r = run_federated(cfg, simulation=sim)["strategies"]["feddm"]
    assert r["rounds"] == 3 and len(r["accuracy_per_round"]) == 4  # the run completed
    assert r["dropped_summaries"] == 0 and r["refused_summaries"] == 4  # 2 clients x rounds 2, 3
    assert sorted(d["round"] for d in r["refused"]) == [2, 2, 3, 3]
    assert all("budget" in d["reason"] for d in r["refused"])
    assert sim.last_log.count("refused its summary") == 4
    # round 1's summaries arrived and trained the model; refused rounds keep it as it is
    assert r["summary_images"] == 2 * 30 and r["uplink_bytes_per_round"][0] > 0
    assert r["accuracy_per_round"][1] == r["accuracy_per_round"][2] == r["accuracy_per_round"][3]
    table = r["privacy_per_client"]
    assert set(table) == {"0", "1"}
    for row in table.values():
        assert row["releases"] == 1 and row["refused"] == 2 and row["budget"] == 1.2
        assert 0.9 < row["epsilon"] <= 1.2


def test_a_bad_run_config_value_ends_the_server_app_with_one_line(sim) -> None:
    # what `flwr run . --run-config "ipc='abc'"` hands the ServerApp (fedcl's command line refuses it first)
    cfg = _cfg(num_clients=2, strategies=["oneshot"], centralised=False)
    cfg.ipc = "abc"  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="invalid run-config value 'ipc'") as info:
        sim.run(cfg)
    assert len(str(info.value).splitlines()) == 1
    errors = [line for line in sim.last_log.splitlines() if "fedcl: error:" in line]
    assert len(errors) == 1 and "'ipc'" in errors[0] and "Traceback" not in sim.last_log
    assert "ROUND 1" not in sim.last_log  # it ended before any round


def test_command_writes_the_run_folder(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = [f"{k}={v}" for k, v in TINY.items()] + [
        "num_clients=3", "strategies=[oneshot,feddm,fedavg]", "rounds=2", "feddm_rounds=2", "codec=float16",
        "param=idc", f"out={out}"]
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
    # idc summaries: clients send the stored images, the server decodes four from each
    assert s["oneshot"]["summary_images"] % 4 == 0 and s["oneshot"]["dropped_summaries"] == 0
    assert "| fedavg | " in (out / "results.md").read_text().split("Final accuracy on each class")[1]
    printed = capsys.readouterr()
    assert "oneshot" in printed.out and len(printed.out.splitlines()) <= 5  # quiet: one line per strategy
    assert "deprecated" not in (printed.out + printed.err).lower()  # Flower's current route, nothing to hide
