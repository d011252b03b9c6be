"""Differential privacy: the privacy block, Opacus accounting, the DP mechanism, a per-owner ledger.

The private real-data access that makes every engine DP lives in :mod:`fedcl.privacy.access`
(reached through :meth:`PrivacyConfig.open_access`), the DP-SGD baseline in :mod:`fedcl.privacy.dpsgd`, the membership-inference
audit in :mod:`fedcl.privacy.audit` and the privacy/utility sweep in :mod:`fedcl.privacy.sweep`.

The names below are imported on first use (PEP 562): ``fedcl.privacy.config`` is read by
every config, and importing it must not import Opacus (``import fedcl`` stays fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedcl._lazy import lazy_attributes

if TYPE_CHECKING:
    from fedcl.privacy.accounting import (
        ACCOUNTANTS,
        DPParams,
        calibrate_noise,
        compute_epsilon,
        make_accountant,
        resolve_privacy,
        validate_privacy,
    )
    from fedcl.privacy.config import PrivacyConfig
    from fedcl.privacy.ledger import PrivacyLedger, Records
    from fedcl.privacy.mechanism import GaussianMechanism, clip_rows, private_network

_LAZY = {
    "ACCOUNTANTS": "fedcl.privacy.accounting",
    "DPParams": "fedcl.privacy.accounting",
    "GaussianMechanism": "fedcl.privacy.mechanism",
    "PrivacyConfig": "fedcl.privacy.config",
    "PrivacyLedger": "fedcl.privacy.ledger",
    "Records": "fedcl.privacy.ledger",
    "calibrate_noise": "fedcl.privacy.accounting",
    "clip_rows": "fedcl.privacy.mechanism",
    "compute_epsilon": "fedcl.privacy.accounting",
    "make_accountant": "fedcl.privacy.accounting",
    "private_network": "fedcl.privacy.mechanism",
    "resolve_privacy": "fedcl.privacy.accounting",
    "validate_privacy": "fedcl.privacy.accounting",
}

__all__ = [
    "ACCOUNTANTS",
    "DPParams",
    "GaussianMechanism",
    "PrivacyConfig",
    "PrivacyLedger",
    "Records",
    "calibrate_noise",
    "clip_rows",
    "compute_epsilon",
    "make_accountant",
    "private_network",
    "resolve_privacy",
    "validate_privacy",
]


__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)
