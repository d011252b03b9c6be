"""fedcl: continual and federated learning with distilled memories.

The public API below is imported on first use (PEP 562), so ``import fedcl`` (and the
``fedcl`` console script's start-up) reads neither torch nor Opacus, Flower or Avalanche;
``from fedcl import load_dataset`` imports what that name needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedcl._lazy import lazy_attributes
from fedcl.errors import ConfigError, DataError, FedclError, PrivacyError, SummaryRejected

__version__ = "0.1.0"

if TYPE_CHECKING:
    from fedcl.data import ImageData, list_datasets, load_dataset
    from fedcl.distill import Distiller, SyntheticSet, create_distiller, list_distillers
    from fedcl.evaluate import EvalResult, evaluate_synthetic
    from fedcl.models import create_model, list_models

_LAZY = {
    "Distiller": "fedcl.distill",
    "EvalResult": "fedcl.evaluate",
    "ImageData": "fedcl.data",
    "SyntheticSet": "fedcl.distill",
    "create_distiller": "fedcl.distill",
    "create_model": "fedcl.models",
    "evaluate_synthetic": "fedcl.evaluate",
    "list_datasets": "fedcl.data",
    "list_distillers": "fedcl.distill",
    "list_models": "fedcl.models",
    "load_dataset": "fedcl.data",
}

__all__ = [
    "ConfigError", "DataError", "Distiller", "EvalResult", "FedclError", "ImageData", "PrivacyError", "SummaryRejected",
    "SyntheticSet", "__version__", "create_distiller", "create_model", "evaluate_synthetic", "list_datasets", "list_distillers",
    "list_models", "load_dataset",
]


__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)
