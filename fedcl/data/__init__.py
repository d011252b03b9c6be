"""Datasets as normalised in-memory tensors, behind one registry."""

from fedcl.data import digits as _digits  # noqa: F401  (registers "digits")
from fedcl.data import vision as _vision  # noqa: F401  (registers torchvision datasets)
from fedcl.data.base import ImageData
from fedcl.data.registry import DATASETS, list_datasets, load_dataset, register_dataset, resolve_root

__all__ = ["DATASETS", "ImageData", "list_datasets", "load_dataset", "register_dataset", "resolve_root"]
