"""PrivacyLedger: exact composition (sequential on shared records, parallel on disjoint ones), refusal, JSON state."""

from __future__ import annotations

import json

import pytest
from opacus.accountants import create_accountant

from fedcl.errors import PrivacyError
from fedcl.privacy import DPParams, PrivacyLedger
from fedcl.privacy.ledger import Records, touch_signatures


def release(nm=1.0, q=0.01, steps=500) -> DPParams:
    return DPParams(epsilon=0.0, delta=1e-5, noise_multiplier=nm, sample_rate=q, steps=steps, max_grad_norm=1.0,
                    accountant="rdp")


def test_composition_is_the_accountant_over_the_whole_history():
    ledger = PrivacyLedger(epsilon=10.0, owner="client-0")
    ledger.record(release(1.0, 0.01, 500), name="a")
    ledger.record(release(2.0, 0.05, 200).as_dict(), name="b")
    acc = create_accountant("rdp")
    acc.history = [(1.0, 0.01, 500), (2.0, 0.05, 200)]
    assert ledger.spent() == pytest.approx(acc.get_epsilon(delta=1e-5))
    single = create_accountant("rdp")
    single.history = [(1.0, 0.01, 500)]
    assert ledger.spent() > single.get_epsilon(delta=1e-5)
    assert ledger.remaining() == pytest.approx(10.0 - ledger.spent())


def test_over_budget_release_is_refused_and_not_recorded():
    ledger = PrivacyLedger(epsilon=1.0)
    ledger.record(release(2.0, 0.01, 300))
    before = ledger.spent()
    assert before < 1.0
    with pytest.raises(PrivacyError, match="budget .*exceeded"):
        ledger.check(release(0.8, 0.05, 2000))
    with pytest.raises(PrivacyError, match="nothing was released"):
        ledger.record(release(0.8, 0.05, 2000), name="too much")
    assert len(ledger.releases) == 1 and ledger.spent() == before


def test_non_private_release_is_always_refused():
    with pytest.raises(PrivacyError):
        PrivacyLedger(epsilon=100.0).record(release(nm=0.0))


def test_state_round_trips_through_json():
    ledger = PrivacyLedger(epsilon=5.0, delta=1e-6, accountant="prv", owner="stream")
    ledger.record(release(1.2, 0.02, 100), name="exp 1")
    state = json.loads(json.dumps(ledger.to_dict()))
    again = PrivacyLedger.from_dict(state)
    assert again.to_dict() == ledger.to_dict()
    assert again.spent() == pytest.approx(ledger.spent())


@pytest.mark.parametrize("kw", [{"epsilon": 0.0}, {"epsilon": 1.0, "delta": 1.0}, {"epsilon": 1.0, "accountant": "gdp"}])
def test_bad_ledgers_are_refused(kw):
    with pytest.raises(PrivacyError):
        PrivacyLedger(**kw)


def test_bad_state_is_refused():
    with pytest.raises(PrivacyError):
        PrivacyLedger.from_dict({"delta": 1e-5})
    with pytest.raises(PrivacyError):
        PrivacyLedger(epsilon=1.0).record({"noise_multiplier": 1.0})


# ---- composition from the records touched --------------------------------------------------------------------


def epsilon_of(*entries) -> float:
    acc = create_accountant("rdp")
    acc.history = list(entries)
    return acc.get_epsilon(delta=1e-5)


def test_records_are_stored_as_canonical_ranges():
    r = Records.from_ids("digits/train", [11, 3, 4, 5, 10, 0, 4])
    assert r.ranges == ((0, 1), (3, 6), (10, 12)) and len(r) == 6
    assert r.ids().tolist() == [0, 3, 4, 5, 10, 11]
    assert Records("d", [(5, 7), (0, 3), (2, 4), (7, 8)]).ranges == ((0, 4), (5, 8))  # merged
    assert Records.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert Records.span("mnist/train", 60_000).to_dict() == {"domain": "mnist/train", "ranges": [[0, 60_000]]}


@pytest.mark.parametrize("bad", [{"ranges": [[0, 1]]}, {"domain": "", "ranges": [[0, 1]]},
                                 {"domain": "d", "ranges": [[3, 3]]}, {"domain": "d", "ranges": [[-1, 2]]},
                                 {"domain": "d", "ranges": [[1]]}])
def test_bad_records_are_refused(bad):
    with pytest.raises(PrivacyError):
        Records.from_dict(bad)


def test_signatures_group_records_by_the_releases_touching_them():
    whole, low, high = Records.span("d", 100), Records.span("d", 50), Records.span("d", 100, 50)
    sigs = touch_signatures([whole, low, high, None, Records.span("other", 10)])
    assert sigs == {frozenset(s) for s in ({0, 1, 3}, {0, 2, 3}, {3}, {3, 4})}
    assert touch_signatures([None, None]) == {frozenset({0, 1})}  # no records: sequential, as before


def test_disjoint_records_compose_in_parallel_overlapping_sequentially():
    a, b = release(1.0, 0.05, 200), release(1.5, 0.02, 300)
    ledger = PrivacyLedger(epsilon=None, owner="stream")
    ledger.record(a, name="low half", records=Records.span("d", 50))
    ledger.record(b, name="high half", records=Records.span("d", 100, 50))
    single = [epsilon_of((1.0, 0.05, 200)), epsilon_of((1.5, 0.02, 300))]
    assert ledger.spent() == pytest.approx(max(single))  # parallel: the max, not the composition
    ledger.record(a, name="all", records=Records.span("d", 100))  # overlaps both halves
    assert ledger.spent() == pytest.approx(max(epsilon_of((1.0, 0.05, 200), (1.0, 0.05, 200)),
                                               epsilon_of((1.5, 0.02, 300), (1.0, 0.05, 200))))
    assert ledger.totals()[:2] == pytest.approx([single[0], max(single)])
    # a release without records touches all of the owner's data, other domains included
    ledger.record(b, name="whole owner")
    assert ledger.spent() == pytest.approx(max(epsilon_of((1.0, 0.05, 200), (1.0, 0.05, 200), (1.5, 0.02, 300)),
                                               epsilon_of((1.5, 0.02, 300), (1.0, 0.05, 200), (1.5, 0.02, 300))))
    assert ledger.remaining() == float("inf")


def test_budget_refuses_overlap_but_admits_disjoint_records():
    one = release(1.0, 0.05, 200)
    ledger = PrivacyLedger(epsilon=epsilon_of((1.0, 0.05, 200)) * 1.2)
    ledger.record(one, records=Records.span("d", 50))
    with pytest.raises(PrivacyError, match="exceeded"):
        ledger.check(one, records=Records.span("d", 60, 40))  # ids 40..49 were read already
    with pytest.raises(PrivacyError, match="exceeded"):
        ledger.check(one)  # no records: all the data
    ledger.record(one, records=Records.span("d", 100, 50))
    ledger.record(one, records=Records.span("other", 10))
    assert len(ledger.releases) == 3 and ledger.spent() == pytest.approx(epsilon_of((1.0, 0.05, 200)))


def test_state_with_records_round_trips_and_old_states_load():
    ledger = PrivacyLedger(epsilon=None, owner="stream")
    ledger.record(release(), records=Records.from_ids("digits/train", [1, 2, 3, 7]))
    ledger.record(release(2.0))
    state = json.loads(json.dumps(ledger.to_dict()))
    assert state["releases"][0]["records"] == {"domain": "digits/train", "ranges": [[1, 4], [7, 8]]}
    again = PrivacyLedger.from_dict(state)
    assert again.to_dict() == ledger.to_dict() and again.spent() == pytest.approx(ledger.spent())
    old = {"epsilon": 5.0, "delta": 1e-5, "accountant": "rdp", "owner": "client-0",  # written before records existed
           "releases": [{"name": "round 1", "noise_multiplier": 1.0, "sample_rate": 0.01, "steps": 500},
                        {"name": "round 2", "noise_multiplier": 1.0, "sample_rate": 0.01, "steps": 500}]}
    loaded = PrivacyLedger.from_dict(old)
    assert [r["records"] for r in loaded.releases] == [None, None]
    assert loaded.spent() == pytest.approx(epsilon_of((1.0, 0.01, 500), (1.0, 0.01, 500)))  # sequential
    with pytest.raises(PrivacyError):
        PrivacyLedger.from_dict({**old, "releases": [{**old["releases"][0], "records": {"domain": "d"}}]})


def test_non_private_release_is_refused_without_budget():
    with pytest.raises(PrivacyError, match="no finite epsilon"):
        PrivacyLedger(epsilon=None).record(release(nm=0.0))
