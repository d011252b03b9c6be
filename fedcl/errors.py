"""One small error hierarchy; the CLI turns each into one clear line on stderr."""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "FedclError", "PrivacyError", "SummaryRejected"]


class FedclError(Exception):
    """Base class of every error fedcl raises on purpose (bad input, missing data...)."""


class ConfigError(FedclError, ValueError):
    """A configuration value, key or name is invalid."""


class DataError(FedclError):
    """A dataset or a saved artifact is missing, unreadable or malformed."""


class PrivacyError(FedclError):
    """A privacy parameter is invalid or a privacy budget would be exceeded."""


class SummaryRejected(FedclError):
    """A client summary failed the server's validation."""
