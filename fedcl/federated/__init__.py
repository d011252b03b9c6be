"""Flower integration: ClientApp/ServerApp, summary codec, validation, accounting, the ``fedcl federated`` command.

The Flower apps live in :mod:`fedcl.federated.client_app` and :mod:`fedcl.federated.server_app`
(import them explicitly: importing this package does not load Flower's app machinery).
"""

from fedcl.federated.codec import CODECS, decode_summary, encode_summary
from fedcl.federated.task import TaskSettings
from fedcl.federated.validate import SummarySpec, validate_summary

__all__ = ["CODECS", "SummarySpec", "TaskSettings", "decode_summary", "encode_summary", "validate_summary"]
