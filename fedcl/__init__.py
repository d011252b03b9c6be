"""fedcl: continual and federated learning with distilled memories."""

__version__ = "0.1.0"

from fedcl.data import ImageData, list_datasets, load_dataset  # noqa: E402
from fedcl.distill import Distiller, SyntheticSet, create_distiller, list_distillers  # noqa: E402
from fedcl.errors import ConfigError, DataError, FedclError, PrivacyError, SummaryRejected  # noqa: E402
from fedcl.evaluate import EvalResult, evaluate_synthetic  # noqa: E402
from fedcl.models import create_model, list_models  # noqa: E402

__all__ = [
    "ConfigError", "DataError", "Distiller", "EvalResult", "FedclError", "ImageData", "PrivacyError", "SummaryRejected",
    "SyntheticSet", "__version__", "create_distiller", "create_model", "evaluate_synthetic", "list_datasets", "list_distillers",
    "list_models", "load_dataset",
]
