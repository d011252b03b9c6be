"""Datasets as normalised in-memory tensors, behind one registry."""

from fedcl.data import digits as _digits  # noqa: F401  (registers "digits")
from fedcl.data import imagefolder as _imagefolder  # noqa: F401  (registers "imagefolder", "cifar10_jpeg")
from fedcl.data import vision as _vision  # noqa: F401  (registers torchvision datasets)
from fedcl.data.base import ImageData
from fedcl.data.imagefolder import load_image_folder
from fedcl.data.registry import (
    DATASETS,
    list_datasets,
    load_dataset,
    load_dataset_from_config,
    register_dataset,
    resolve_root,
)
from fedcl.data.split import check_eval_split, stratified_holdout, with_validation

__all__ = ["DATASETS", "ImageData", "check_eval_split", "list_datasets", "load_dataset", "load_dataset_from_config",
           "load_image_folder", "register_dataset", "resolve_root", "stratified_holdout", "with_validation"]
