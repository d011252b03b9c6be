"""Flower integration: ClientApp/ServerApp, summary codec, validation, accounting, the ``fedcl federated`` command.

The Flower apps live in :mod:`fedcl.federated.client_app` and :mod:`fedcl.federated.server_app`
(import them explicitly: importing this package does not load Flower's app machinery).
"""

from fedcl.federated.codec import CODECS, decode_summary, encode_summary
from fedcl.federated.config import FederatedConfig, from_run_config, to_run_config
from fedcl.federated.validate import SummarySpec, validate_summary

__all__ = ["CODECS", "FederatedConfig", "SummarySpec", "decode_summary", "encode_summary", "from_run_config",
           "to_run_config", "validate_summary"]
