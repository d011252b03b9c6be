"""A privacy ledger per data owner (a dataset, a continual stream, a federated client).

The ledger composes every DP release made from one owner's data and refuses, before
the data is touched, a release that would take the total over the owner's budget.
Each release is kept as the Opacus accountant history entry
``(noise_multiplier, sample_rate, steps)``; the total is computed by one Opacus
accountant over the whole history, so composition is exact under RDP (or PRV), not a
loose sum of epsilons.

API::

    from fedcl.privacy.ledger import PrivacyLedger

    ledger = PrivacyLedger(epsilon=4.0, delta=1e-5, owner="client-3")   # accountant="rdp" | "prv"
    params = plan_release(distiller, class_counts, ipc, privacy)          # fedcl.privacy.access; no data
    ledger.check(params)              # PrivacyError if it would exceed the budget (nothing recorded)
    syn = distiller.distill(x, y, ipc, privacy=PrivacyConfig(noise_multiplier=params.noise_multiplier, ...))
    ledger.record(syn.meta["privacy"], name="round 3")   # check + append; accepts DPParams or its dict
    ledger.spent(), ledger.remaining(), ledger.would_spend(params)
    state = ledger.to_dict()          # JSON-serialisable (Flower context.state, continual stream state)
    ledger = PrivacyLedger.from_dict(state)

``charge(params, name)`` is ``record`` under its budgeting name: call it *before* the
release (it raises without recording when over budget) when the release is certain to
follow. A non-private release (``noise_multiplier == 0``) has infinite epsilon and is
always refused. The ``gdp`` accountant cannot compose different mechanisms and is not
accepted by the ledger.
"""

from __future__ import annotations

import math
from typing import Any

from fedcl.errors import PrivacyError
from fedcl.privacy.accounting import DPParams, make_accountant

__all__ = ["LEDGER_ACCOUNTANTS", "PrivacyLedger"]

#: accountants that can compose different releases (gdp cannot)
LEDGER_ACCOUNTANTS = ("rdp", "prv")


def _entry(release: DPParams | dict[str, Any]) -> tuple[float, float, int]:
    d = release.as_dict() if isinstance(release, DPParams) else dict(release)
    try:
        nm, q, steps = float(d["noise_multiplier"]), float(d["sample_rate"]), int(d["steps"])
    except (KeyError, TypeError, ValueError):
        raise PrivacyError(f"a release needs noise_multiplier, sample_rate and steps, got {d!r}") from None
    if not 0 < q <= 1 or steps < 0 or nm < 0 or math.isnan(nm):
        raise PrivacyError(f"invalid release parameters: noise_multiplier={nm}, sample_rate={q}, steps={steps}")
    return nm, q, steps


class PrivacyLedger:
    """The (epsilon, delta) budget of one data owner and every release charged to it.

    Args:
        epsilon: total epsilon the owner allows.
        delta: the delta every total is stated at.
        accountant: ``rdp`` (default) or ``prv`` (Opacus).
        owner: a name for messages.

    Raises:
        PrivacyError: epsilon <= 0, delta outside (0, 1), or an accountant that cannot compose.
    """

    def __init__(self, epsilon: float, delta: float = 1e-5, accountant: str = "rdp", owner: str = "") -> None:
        if not (float(epsilon) > 0) or math.isinf(float(epsilon)):
            raise PrivacyError(f"a ledger's epsilon budget must be a positive finite number, got {epsilon}")
        if not 0 < float(delta) < 1:
            raise PrivacyError(f"a ledger's delta must be in (0, 1), got {delta}")
        if accountant not in LEDGER_ACCOUNTANTS:
            raise PrivacyError(f"the ledger composes releases with {' or '.join(LEDGER_ACCOUNTANTS)}, "
                               f"not {accountant!r} (gdp cannot compose different mechanisms)")
        self.epsilon = float(epsilon)
        self.delta = float(delta)
        self.accountant = accountant
        self.owner = owner
        self.releases: list[dict[str, Any]] = []

    def _epsilon_of(self, history: list[tuple[float, float, int]]) -> float:
        history = [h for h in history if h[2] > 0]
        if not history:
            return 0.0
        if any(nm == 0 for nm, _, _ in history):
            return math.inf
        acc = make_accountant(self.accountant)
        acc.history = list(history)
        return float(acc.get_epsilon(delta=self.delta))

    @property
    def history(self) -> list[tuple[float, float, int]]:
        """The Opacus accountant history of every recorded release."""
        return [(r["noise_multiplier"], r["sample_rate"], r["steps"]) for r in self.releases]

    def spent(self) -> float:
        """Total epsilon of every recorded release, composed by the accountant, at :attr:`delta`."""
        return self._epsilon_of(self.history)

    def remaining(self) -> float:
        """Budget left (0 when spent)."""
        return max(0.0, self.epsilon - self.spent())

    def would_spend(self, release: DPParams | dict[str, Any]) -> float:
        """Total epsilon if ``release`` were recorded too."""
        return self._epsilon_of([*self.history, _entry(release)])

    def check(self, release: DPParams | dict[str, Any], name: str = "") -> float:
        """Raise PrivacyError if ``release`` would exceed the budget; else return the new total.

        Call this before the release touches data. Records nothing.
        """
        total = self.would_spend(release)
        if total > self.epsilon * (1 + 1e-9):
            who = f" of {self.owner!r}" if self.owner else ""
            raise PrivacyError(f"privacy budget{who} exceeded: release {name or len(self.releases) + 1!r} would bring "
                               f"epsilon to {total:.3g} (delta={self.delta:g}), over the budget {self.epsilon:g} "
                               f"(spent so far {self.spent():.3g}); nothing was released")
        return total

    def record(self, release: DPParams | dict[str, Any], name: str = "") -> float:
        """Check ``release`` against the budget and append it; returns the new total epsilon."""
        total = self.check(release, name)
        nm, q, steps = _entry(release)
        self.releases.append({"name": name or f"release {len(self.releases) + 1}", "noise_multiplier": nm,
                              "sample_rate": q, "steps": steps})
        return total

    charge = record

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (plain floats, ints, strings and lists)."""
        return {"epsilon": self.epsilon, "delta": self.delta, "accountant": self.accountant, "owner": self.owner,
                "releases": [dict(r) for r in self.releases]}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> PrivacyLedger:
        """Rebuild a ledger saved with :meth:`to_dict`."""
        try:
            ledger = cls(state["epsilon"], state["delta"], state.get("accountant", "rdp"), state.get("owner", ""))
            for r in state.get("releases", []):
                nm, q, steps = _entry(r)
                ledger.releases.append({"name": str(r.get("name", "")), "noise_multiplier": nm, "sample_rate": q,
                                        "steps": steps})
        except (KeyError, TypeError) as exc:
            raise PrivacyError(f"not a privacy ledger state: {exc}") from None
        return ledger

    def __repr__(self) -> str:
        return (f"PrivacyLedger(owner={self.owner!r}, spent={self.spent():.3g}/{self.epsilon:g}, "
                f"delta={self.delta:g}, releases={len(self.releases)})")
