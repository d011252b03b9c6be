"""Differential privacy: the privacy block, Opacus accounting, the DP mechanism, a per-owner ledger.

The private real-data access that makes every engine DP lives in :mod:`fedcl.privacy.access`
(reached through :meth:`PrivacyConfig.open_access`), the DP-SGD baseline in :mod:`fedcl.privacy.dpsgd`, the membership-inference
audit in :mod:`fedcl.privacy.audit` and the privacy/utility sweep in :mod:`fedcl.privacy.sweep`.
"""

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
