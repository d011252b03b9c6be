"""A privacy ledger per data owner (a dataset, a continual stream, a federated client).

Every DP release made from one owner's data is recorded with the records it read
(:class:`Records`: a domain naming the underlying data, e.g. ``"digits/train"``, and the
ids of the examples, kept as ranges). The owner's total epsilon is the maximum, over
records, of the composition of every release that touched that record: releases on the
same records compose **sequentially** (one Opacus accountant over their history, exact
under RDP or PRV, not a sum of epsilons), releases on disjoint records in **parallel**.
A release without records touches all of the owner's data. Records are grouped by the
set of releases touching them (:func:`touch_signatures`), so the cost grows with the
number of distinct groups, not of records.

API::

    from fedcl.privacy.ledger import PrivacyLedger, Records

    ledger = PrivacyLedger(epsilon=4.0, delta=1e-5, owner="client-3")   # epsilon=None: account, never refuse
    params = plan_release(distiller, class_counts, ipc, privacy)          # fedcl.privacy.access; no data
    part = Records.from_ids("mnist/train", partition_indices)
    ledger.check(params, records=part)   # PrivacyError if the total would exceed the budget (nothing recorded)
    syn = distiller.distill(x, y, ipc, privacy=...)
    ledger.record(syn.meta["privacy"], name="round 3", records=part)    # check + append; DPParams or its dict
    ledger.spent(), ledger.remaining(), ledger.would_spend(params, records=part), ledger.totals()
    state = ledger.to_dict()             # JSON (Flower context.state, a continual buffer's state_dict)
    ledger = PrivacyLedger.from_dict(state)

``charge`` is ``record`` under its budgeting name. A non-private release
(``noise_multiplier == 0``) has infinite epsilon and is always refused. The ``gdp``
accountant cannot compose different mechanisms and is not accepted by the ledger.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcl.errors import PrivacyError
from fedcl.privacy.accounting import DPParams, make_accountant

__all__ = ["LEDGER_ACCOUNTANTS", "PrivacyLedger", "Records", "compose_epsilon", "touch_signatures"]

#: accountants that can compose different releases (gdp cannot)
LEDGER_ACCOUNTANTS = ("rdp", "prv")

Entry = tuple[float, float, int]  # an Opacus accountant history entry: (noise_multiplier, sample_rate, steps)


@dataclass(frozen=True)
class Records:
    """Which records of an owner a release read: example ids of one domain, as half-open ranges.

    Attributes:
        domain: names the underlying data (``"digits/train"``); different domains are disjoint.
        ranges: sorted, disjoint, non-adjacent ``(start, stop)`` pairs.
    """

    domain: str
    ranges: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if not isinstance(self.domain, str) or not self.domain:
            raise PrivacyError(f"a records domain must be a non-empty string naming the data, got {self.domain!r}")
        try:
            ranges = sorted((int(a), int(b)) for a, b in self.ranges)
        except (TypeError, ValueError):
            raise PrivacyError(f"record ranges must be [start, stop] pairs of ints, got {self.ranges!r}") from None
        if any(a < 0 or b <= a for a, b in ranges):
            raise PrivacyError(f"record ranges must be [start, stop) with 0 <= start < stop, got {ranges}")
        merged: list[list[int]] = []
        for a, b in ranges:  # merge overlapping or adjacent ranges: one canonical form per set of ids
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        object.__setattr__(self, "ranges", tuple((a, b) for a, b in merged))

    @classmethod
    def from_ids(cls, domain: str, ids: Any) -> Records:
        """Records of the given integer ids (any order, repeats allowed), stored compactly."""
        a = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        if a.size and a[0] < 0:
            raise PrivacyError(f"record ids must be >= 0, got {int(a[0])}")
        breaks = np.flatnonzero(np.diff(a) != 1) + 1  # where a run of consecutive ids ends
        starts = a[np.r_[0, breaks]] if a.size else a
        stops = a[np.r_[breaks - 1, a.size - 1]] + 1 if a.size else a
        return cls(domain, tuple(zip(starts.tolist(), stops.tolist())))

    @classmethod
    def span(cls, domain: str, stop: int, start: int = 0) -> Records:
        """The ids ``start .. stop - 1`` (a whole dataset of ``stop`` examples by default)."""
        return cls(domain, ((int(start), int(stop)),) if int(stop) > int(start) else ())

    def __len__(self) -> int:
        return sum(b - a for a, b in self.ranges)

    def ids(self) -> np.ndarray:
        """Every id, sorted."""
        return np.concatenate([np.arange(a, b) for a, b in self.ranges]) if self.ranges else np.zeros(0, np.int64)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``{"domain": ..., "ranges": [[start, stop], ...]}``."""
        return {"domain": self.domain, "ranges": [[a, b] for a, b in self.ranges]}

    @classmethod
    def from_dict(cls, d: Records | dict[str, Any]) -> Records:
        """Inverse of :meth:`to_dict` (validated; a Records passes through)."""
        if isinstance(d, Records):
            return d
        try:
            return cls(d["domain"], tuple(d["ranges"]))
        except (KeyError, TypeError):
            raise PrivacyError(f"records need a domain and [start, stop] ranges, got {d!r}") from None


def touch_signatures(records: Sequence[Records | None]) -> set[frozenset[int]]:
    """The distinct sets of releases (by index) that touch one record.

    ``records[i]`` is what release ``i`` read; None means all of the owner's data. Every
    record is touched by the None releases; the set of only those is always included (the
    owner's records that no other release read, or all of them when no release has records).
    """
    everywhere = frozenset(i for i, r in enumerate(records) if r is None)
    sigs = {everywhere}
    for domain in sorted({r.domain for r in records if r is not None}):
        members = [(i, r) for i, r in enumerate(records) if r is not None and r.domain == domain]
        bounds = np.unique([x for _, r in members for ab in r.ranges for x in ab])
        if len(bounds) < 2:  # only empty records in this domain
            continue
        covered = np.zeros((len(members), max(len(bounds) - 1, 0)), dtype=bool)
        for row, (_, r) in enumerate(members):  # a difference array per release over the elementary segments
            diff = np.zeros(len(bounds), dtype=np.int64)
            np.add.at(diff, np.searchsorted(bounds, [a for a, _ in r.ranges]), 1)
            np.add.at(diff, np.searchsorted(bounds, [b for _, b in r.ranges]), -1)
            covered[row] = np.cumsum(diff)[:-1] > 0
        index = np.array([i for i, _ in members])
        for col in np.unique(covered, axis=1).T:
            sigs.add(everywhere | frozenset(index[col].tolist()))
    return sigs


def compose_epsilon(history: Sequence[Entry], delta: float, accountant: str = "rdp") -> float:
    """Epsilon of a sequence of releases on the same records: one Opacus accountant over the history."""
    entries = tuple(sorted((float(nm), float(q), int(steps)) for nm, q, steps in history if int(steps) > 0))
    return _compose(entries, float(delta), accountant)


@functools.lru_cache(maxsize=4096)
def _compose(history: tuple[Entry, ...], delta: float, accountant: str) -> float:
    # cached: composition is order-free, and a ledger asks for the same histories again and again
    if not history:
        return 0.0
    if any(nm == 0 for nm, _, _ in history):
        return math.inf
    acc = make_accountant(accountant)
    acc.history = list(history)
    return float(acc.get_epsilon(delta=delta))


def _entry(release: DPParams | dict[str, Any]) -> Entry:
    d = release.as_dict() if isinstance(release, DPParams) else dict(release)
    try:
        nm, q, steps = float(d["noise_multiplier"]), float(d["sample_rate"]), int(d["steps"])
    except (KeyError, TypeError, ValueError):
        raise PrivacyError(f"a release needs noise_multiplier, sample_rate and steps, got {d!r}") from None
    if not 0 < q <= 1 or steps < 0 or nm < 0 or math.isnan(nm):
        raise PrivacyError(f"invalid release parameters: noise_multiplier={nm}, sample_rate={q}, steps={steps}")
    return nm, q, steps


def _records(records: Records | dict[str, Any] | None) -> Records | None:
    return None if records is None else Records.from_dict(records)


class PrivacyLedger:
    """The (epsilon, delta) budget of one data owner and every release charged to it.

    Args:
        epsilon: total epsilon the owner allows (its budget); None accounts without a cap.
        delta: the delta every total is stated at.
        accountant: ``rdp`` (default) or ``prv`` (Opacus).
        owner: a name for messages.

    Raises:
        PrivacyError: epsilon <= 0 or infinite, delta outside (0, 1), or an accountant that cannot compose.
    """

    def __init__(self, epsilon: float | None, delta: float = 1e-5, accountant: str = "rdp", owner: str = "") -> None:
        if epsilon is not None and (not float(epsilon) > 0 or math.isinf(float(epsilon))):
            raise PrivacyError(f"a ledger's epsilon budget must be a positive finite number (or None), got {epsilon}")
        if not 0 < float(delta) < 1:
            raise PrivacyError(f"a ledger's delta must be in (0, 1), got {delta}")
        if accountant not in LEDGER_ACCOUNTANTS:
            raise PrivacyError(f"the ledger composes releases with {' or '.join(LEDGER_ACCOUNTANTS)}, "
                               f"not {accountant!r} (gdp cannot compose different mechanisms)")
        self.epsilon = None if epsilon is None else float(epsilon)
        self.delta = float(delta)
        self.accountant = accountant
        self.owner = owner
        self.releases: list[dict[str, Any]] = []

    @property
    def history(self) -> list[Entry]:
        """The Opacus accountant history of every recorded release, in order."""
        return [(r["noise_multiplier"], r["sample_rate"], r["steps"]) for r in self.releases]

    def _total(self, history: list[Entry], records: list[Records | None]) -> float:
        return max(compose_epsilon([history[i] for i in sorted(sig)], self.delta, self.accountant)
                   for sig in touch_signatures(records))

    def _records(self) -> list[Records | None]:
        return [_records(r.get("records")) for r in self.releases]

    def spent(self) -> float:
        """The owner's total epsilon at :attr:`delta`: the maximum over records of the composition there."""
        return self._total(self.history, self._records())

    def totals(self) -> list[float]:
        """The owner's total after each release, in order."""
        history, records = self.history, self._records()
        return [self._total(history[:k], records[:k]) for k in range(1, len(history) + 1)]

    def remaining(self) -> float:
        """Budget left (0 when spent; inf without a budget)."""
        return math.inf if self.epsilon is None else max(0.0, self.epsilon - self.spent())

    def would_spend(self, release: DPParams | dict[str, Any], records: Records | dict[str, Any] | None = None) -> float:
        """The owner's total if ``release``, reading ``records`` (None: all its data), were recorded too."""
        return self._total([*self.history, _entry(release)], [*self._records(), _records(records)])

    def check(self, release: DPParams | dict[str, Any], name: str = "",
              records: Records | dict[str, Any] | None = None) -> float:
        """Raise PrivacyError if ``release`` would exceed the budget; else return the new total.

        Call this before the release touches data. Records nothing. A non-private release
        (infinite epsilon) is refused even without a budget.
        """
        total = self.would_spend(release, records)
        budget = math.inf if self.epsilon is None else self.epsilon * (1 + 1e-9)
        if total > budget or math.isinf(total):
            who = f" of {self.owner!r}" if self.owner else ""
            limit = "no finite epsilon" if self.epsilon is None else f"the budget {self.epsilon:g}"
            raise PrivacyError(f"privacy budget{who} exceeded: release {name or len(self.releases) + 1!r} would bring "
                               f"epsilon to {total:.3g} (delta={self.delta:g}), over {limit} "
                               f"(spent so far {self.spent():.3g}); nothing was released")
        return total

    def record(self, release: DPParams | dict[str, Any], name: str = "",
               records: Records | dict[str, Any] | None = None) -> float:
        """Check ``release`` (reading ``records``; None: all the owner's data) and append it; returns the new total."""
        total = self.check(release, name, records)
        nm, q, steps = _entry(release)
        rec = _records(records)
        self.releases.append({"name": name or f"release {len(self.releases) + 1}", "noise_multiplier": nm,
                              "sample_rate": q, "steps": steps, "records": None if rec is None else rec.to_dict()})
        return total

    charge = record

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (plain floats, ints, strings, lists and None)."""
        return {"epsilon": self.epsilon, "delta": self.delta, "accountant": self.accountant, "owner": self.owner,
                "releases": [dict(r) for r in self.releases]}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> PrivacyLedger:
        """Rebuild a ledger saved with :meth:`to_dict` (states from before records load as whole-data releases)."""
        try:
            ledger = cls(state["epsilon"], state["delta"], state.get("accountant", "rdp"), state.get("owner", ""))
            for r in state.get("releases", []):
                nm, q, steps = _entry(r)
                rec = _records(r.get("records"))
                ledger.releases.append({"name": str(r.get("name", "")), "noise_multiplier": nm, "sample_rate": q,
                                        "steps": steps, "records": None if rec is None else rec.to_dict()})
        except (KeyError, TypeError, AttributeError) as exc:
            raise PrivacyError(f"not a privacy ledger state: {exc!r}") from None
        return ledger

    def __repr__(self) -> str:
        budget = "no budget" if self.epsilon is None else f"{self.epsilon:g}"
        return (f"PrivacyLedger(owner={self.owner!r}, spent={self.spent():.3g}/{budget}, "
                f"delta={self.delta:g}, releases={len(self.releases)})")
