"""PrivacyLedger: exact composition, refusal before release, JSON state."""

from __future__ import annotations

import json

import pytest
from opacus.accountants import create_accountant

from fedcl.errors import PrivacyError
from fedcl.privacy import DPParams, PrivacyLedger


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
