"""scikit-learn's bundled 8x8 handwritten digits: the embedded default, no download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedcl.data.base import ImageData
from fedcl.data.registry import register_dataset

# A fixed stratified split: the same test set for everybody, whatever the run's seed.
_SPLIT_SEED = 0
_TEST_FRACTION = 0.25


@register_dataset("digits")
def load_digits(root: Path, download: bool = False) -> ImageData:
    """1,797 real 8x8 grey images of digits 0-9, split 75/25, stratified."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]  # pixels are 0..16
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=_TEST_FRACTION, stratify=y, random_state=_SPLIT_SEED)
    mean, std = float(x_tr.mean()), float(x_tr.std())
    return ImageData(
        name="digits",
        train_images=(torch.from_numpy(x_tr) - mean) / std,
        train_labels=torch.from_numpy(y_tr),
        test_images=(torch.from_numpy(x_te) - mean) / std,
        test_labels=torch.from_numpy(y_te),
        num_classes=10,
        mean=(mean,),
        std=(std,),
        class_names=[str(i) for i in range(10)],
    )
