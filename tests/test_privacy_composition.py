"""Composition from the records touched, the budget stop of a continual stream, and an independent accountant.

A DP continual stream keeps one ledger for its owner: a permuted stream (the same images in
every experience) composes sequentially, a split stream (disjoint classes) in parallel.
Every epsilon fedcl reports is recomputed with Google's dp-accounting (RDP), which shares no
code with Opacus.
"""

from __future__ import annotations

import json
import math
import warnings

import dp_accounting
import pytest
import torch
from dp_accounting.rdp import RdpAccountant
from opacus.accountants.rdp import RDPAccountant

import strategies.replay as replay
from fedcl.continual.benchmarks import make_benchmark
from fedcl.errors import PrivacyError
from fedcl.privacy import DPParams, PrivacyConfig, validate_privacy
from fedcl.privacy.ledger import PrivacyLedger, Records, compose_epsilon
from strategies.replay import DistilledBuffer

TINY = {"iterations": 2, "batch_real": 16, "model_kwargs": {"width": 8}, "dsa": False, "device": "cpu"}
NM = 1.2  # a fixed noise multiplier: no calibration, so the stream tests stay fast
ORDERS = RDPAccountant.DEFAULT_ALPHAS  # the same RDP orders as Opacus, so the two may agree within 1 %
# the buffer's engines start DP runs from noise and say so; that is not what these tests check
pytestmark = pytest.mark.filterwarnings("ignore:DP. init='real'")


def google_epsilon(history, delta: float = 1e-5) -> float:
    """Epsilon of releases on the same records, by dp-accounting's RDP accountant."""
    events = [dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(nm)), steps) for nm, q, steps in history]
    acc = RdpAccountant(ORDERS)
    acc.compose(dp_accounting.ComposedDpEvent(events))
    return acc.get_epsilon(delta)


def entry(p: dict) -> tuple[float, float, int]:
    return p["noise_multiplier"], p["sample_rate"], p["steps"]


def stream(name: str, budget: float | None = None, n: int = 2) -> tuple[DistilledBuffer, list]:
    bench = make_benchmark(name, seed=0)
    buf = DistilledBuffer(20, distiller_kwargs=TINY, num_classes=10, meta=bench.meta, records_domain=bench.records_domain,
                          privacy=PrivacyConfig(noise_multiplier=NM, budget=budget))
    return buf, list(bench.scenario.train_stream)[:n]


# ---- a continual stream: one ledger for its owner ------------------------------------------------------------


def test_permuted_stream_composes_sequentially():
    buf, exps = stream("permuted_digits")
    for exp in exps:
        buf.post_adapt(None, exp)
    one, two = (entry(p) for p in buf.privacy_spent)
    assert [r["records"] for r in buf.ledger.releases] == [{"domain": "digits/train", "ranges": [[0, 1347]]}] * 2
    # every experience holds the same images: the total is their sequential composition, not the maximum
    assert buf.stream_epsilon() == pytest.approx(compose_epsilon([one, two], 1e-5))
    assert buf.stream_epsilon() > 1.1 * max(p["epsilon"] for p in buf.privacy_spent)
    assert buf.stream_epsilon() == pytest.approx(google_epsilon([one, two]), rel=0.01)


def test_split_stream_composes_in_parallel():
    buf, exps = stream("split_digits")
    for exp in exps:
        buf.post_adapt(None, exp)
    ids = [Records.from_dict(r["records"]).ids() for r in buf.ledger.releases]
    assert len(set(ids[0]) & set(ids[1])) == 0 and len(ids[0]) + len(ids[1]) < 1347  # two classes each, disjoint
    assert buf.stream_epsilon() == pytest.approx(max(p["epsilon"] for p in buf.privacy_spent))


def test_budget_refuses_the_release_before_reading_its_images(monkeypatch):
    single = compose_epsilon([(NM, 16 * 10 / 1347, 2)], 1e-5)
    budget = 1.1 * single  # room for one release on any record
    reads = []
    collect = replay._collect
    monkeypatch.setattr(replay, "_collect", lambda ds: reads.append(1) or collect(ds))

    buf, exps = stream("permuted_digits", budget=budget)
    buf.post_adapt(None, exps[0])
    before = (buf.class_counts(), len(buf.ledger.releases), len(reads))
    with pytest.raises(PrivacyError, match=r"budget of 'stream' exceeded: release 'experience 1 memory'"):
        buf.post_adapt(None, exps[1])
    assert (buf.class_counts(), len(buf.ledger.releases), len(reads)) == before  # no image read, nothing recorded
    assert buf.experiences == 1 and len(buf.privacy_spent) == 1

    # the same budget admits a second split experience: its records are disjoint from the first's
    buf, exps = stream("split_digits", budget=budget)
    for exp in exps:
        buf.post_adapt(None, exp)
    assert len(buf.ledger.releases) == 2 and buf.stream_epsilon() <= budget


def test_ledger_travels_with_the_buffer_state(tmp_path):
    from safetensors.torch import load_file, save_file

    buf, exps = stream("permuted_digits", budget=None, n=1)
    buf.post_adapt(None, exps[0])
    save_file(buf.state_dict(), str(tmp_path / "buffer.safetensors"))
    state = load_file(str(tmp_path / "buffer.safetensors"))
    assert state["privacy"].dtype == torch.uint8
    # resumed under a budget: the saved release counts, so the next one on the same images is refused
    again, exps = stream("permuted_digits", budget=1.1 * buf.stream_epsilon())
    again.load_state_dict(state)
    assert again.ledger.to_dict()["releases"] == buf.ledger.to_dict()["releases"]
    assert again.privacy_spent == json.loads(json.dumps(buf.privacy_spent))
    with pytest.raises(PrivacyError, match="exceeded"):
        again.post_adapt(None, exps[1])
    plain = DistilledBuffer(20, distiller_kwargs=TINY)  # no privacy block: the saved ledger is restored as it was
    plain.load_state_dict(state)
    assert plain.stream_epsilon() == pytest.approx(buf.stream_epsilon())


@pytest.mark.parametrize("kw, match", [({"budget": 0.0}, "budget must be a positive finite"),
                                       ({"budget": -1.0}, "budget must be a positive finite"),
                                       ({"budget": math.inf}, "budget must be a positive finite"),
                                       ({"budget": math.nan}, "budget must be a positive finite"),
                                       ({"epsilon": 2.0, "budget": 1.0}, "below privacy.epsilon")])
def test_bad_budget_is_refused(kw, match):
    with pytest.raises(PrivacyError, match=match):
        validate_privacy(PrivacyConfig(**kw))
    with pytest.raises(PrivacyError, match=match):
        DistilledBuffer(20, privacy=PrivacyConfig(**{"epsilon": 1.0, **kw}), distiller_kwargs=TINY)
    validate_privacy(PrivacyConfig(epsilon=1.0, budget=1.0))  # equal is fine: room for one release


CLI = ["continual", "strategies=[distilled_dp]", "epochs=1", "n_experiences=2", "mem_size=10", "model=mlp",
       "model_kwargs.width=16", "distill.iterations=2", "distill.batch_real=16", "distill.model_kwargs.width=8",
       "distill.engine.dsa=false", "distill.gdumb_epochs=5", "device=cpu", f"privacy.noise_multiplier={NM}"]


def test_cli_reports_the_sequential_total_and_stops_at_the_budget(tmp_path, capsys):
    from fedcl.cli import main

    out = tmp_path / "run"
    assert main([*CLI, "benchmark=permuted_digits", f"out={out}"]) == 0
    p = json.loads((out / "metrics.json").read_text())["strategies"]["distilled_dp"]["runs"][0]["privacy"]
    history = [entry(r) for r in p["per_experience"]]
    assert p["total_epsilon"] == pytest.approx(compose_epsilon(history, 1e-5))
    assert p["total_after_experience"] == pytest.approx([p["epsilon_per_experience"][0], p["total_epsilon"]])
    assert p["budget"] is None and p["total_epsilon"] > max(p["epsilon_per_experience"])
    capsys.readouterr()

    refused = tmp_path / "refused"
    rc = main([*CLI, "benchmark=permuted_digits", f"privacy.budget={1.1 * p['epsilon_per_experience'][0]}",
               f"out={refused}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "budget of 'permuted_digits stream' exceeded" in err[0]
    assert not refused.exists()
    rc = main([*CLI, "privacy.noise_multiplier=null", "privacy.epsilon=2", "privacy.budget=1", f"out={refused}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "below privacy.epsilon" in err[0] and not refused.exists()


# ---- an independent accountant: dp-accounting recomputes what fedcl records -------------------------------------


@pytest.mark.parametrize("method, opts", [("dm", {"iterations": 4, "batch_real": 32}),
                                          ("gm", {"iterations": 1, "batch_real": 16}),
                                          ("dsa", {"iterations": 1, "batch_real": 16}),
                                          ("mtt", {"iterations": 1, "num_experts": 1, "train_epochs": 2,
                                                   "max_start_epoch": 0, "expert_epochs": 1, "syn_steps": 2})])
def test_release_epsilon_matches_dp_accounting(method, opts, tmp_path):
    from fedcl import create_distiller, load_dataset

    if method == "mtt":  # its release is the DP-SGD training of its experts
        opts = {**opts, "cache_dir": str(tmp_path)}

    data = load_dataset("digits")
    engine = create_distiller(method, model_kwargs={"width": 16}, device="cpu", seed=0, progress=False, **opts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        syn = engine.distill(data.train_images, data.train_labels, 1, num_classes=10,
                             privacy=PrivacyConfig(noise_multiplier=0.9))
    p = syn.meta["privacy"]
    assert p["steps"] >= opts["iterations"] and 0 < p["sample_rate"] < 1
    assert p["epsilon"] == pytest.approx(google_epsilon([entry(p)], p["delta"]), rel=0.01)


def release(nm: float, q: float, steps: int) -> DPParams:
    return DPParams(epsilon=0.0, delta=1e-5, noise_multiplier=nm, sample_rate=q, steps=steps, max_grad_norm=1.0,
                    accountant="rdp")


def test_composed_ledger_matches_dp_accounting():
    a, b, c = (1.0, 0.05, 200), (2.0, 0.2, 50), (0.8, 0.01, 1000)
    sequential = PrivacyLedger(epsilon=None)
    for r in (a, b, c):
        sequential.record(release(*r))
    assert sequential.spent() == pytest.approx(google_epsilon([a, b, c]), rel=0.01)

    # parallel: a on ids 0..499, b on 500..999, c on 250..749 (overlapping both halves)
    parallel = PrivacyLedger(epsilon=None)
    parallel.record(release(*a), records=Records.span("d", 500))
    parallel.record(release(*b), records=Records.span("d", 1000, 500))
    assert parallel.spent() == pytest.approx(max(google_epsilon([a]), google_epsilon([b])), rel=0.01)
    parallel.record(release(*c), records=Records.span("d", 750, 250))
    assert parallel.spent() == pytest.approx(max(google_epsilon([a, c]), google_epsilon([b, c])), rel=0.01)
