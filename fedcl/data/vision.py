"""torchvision datasets read from a local root (downloaded only when asked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedcl.data.base import ImageData
from fedcl.data.registry import register_dataset
from fedcl.errors import DataError

# name -> (torchvision class, mean, std, expected files relative to root)
_SPECS: dict[str, tuple[str, tuple[float, ...], tuple[float, ...], list[str]]] = {
    "mnist": ("MNIST", (0.1307,), (0.3081,), [
        "MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/train-labels-idx1-ubyte",
        "MNIST/raw/t10k-images-idx3-ubyte", "MNIST/raw/t10k-labels-idx1-ubyte"]),
    "fashion_mnist": ("FashionMNIST", (0.2860,), (0.3530,), [
        "FashionMNIST/raw/train-images-idx3-ubyte", "FashionMNIST/raw/train-labels-idx1-ubyte",
        "FashionMNIST/raw/t10k-images-idx3-ubyte", "FashionMNIST/raw/t10k-labels-idx1-ubyte"]),
    "svhn": ("SVHN", (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), ["train_32x32.mat", "test_32x32.mat"]),
    "cifar10": ("CIFAR10", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), ["cifar-10-batches-py/data_batch_1"]),
    "cifar100": ("CIFAR100", (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762), ["cifar-100-python/train"]),
}


def _open(cls_name: str, root: Path, train: bool, download: bool) -> Any:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    if cls_name == "SVHN":
        return cls(str(root), split="train" if train else "test", download=download)
    return cls(str(root), train=train, download=download)


def _to_tensors(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw arrays torchvision keeps in memory, as float [0, 1] NCHW and int64 labels."""
    data = ds.data
    if isinstance(data, torch.Tensor):
        data = data.numpy()
    data = np.asarray(data)
    if data.ndim == 3:  # (N, H, W) grey
        data = data[:, None]
    elif data.shape[-1] in (1, 3) and data.shape[1] not in (1, 3):  # NHWC
        data = data.transpose(0, 3, 1, 2)
    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = ds.labels
    x = torch.from_numpy(np.ascontiguousarray(data)).float().div_(255.0)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    return x, y


def _make_loader(name: str) -> None:
    cls_name, mean, std, files = _SPECS[name]

    @register_dataset(name)
    def _load(root: Path, download: bool = False) -> ImageData:
        if not download:
            missing = [f for f in files if not (root / f).exists()]
            if missing:
                raise DataError(
                    f"dataset {name!r} not found under {root.resolve()}: expected {', '.join(files)} "
                    f"(torchvision layout); set data.root or FEDCL_DATA, or pass data.download=true"
                )
        try:
            train, test = _open(cls_name, root, True, download), _open(cls_name, root, False, download)
        except (RuntimeError, OSError, ValueError) as exc:
            raise DataError(f"could not read dataset {name!r} under {root.resolve()}: {exc}") from exc
        x_tr, y_tr = _to_tensors(train)
        x_te, y_te = _to_tensors(test)
        m = torch.tensor(mean).view(1, -1, 1, 1)
        s = torch.tensor(std).view(1, -1, 1, 1)
        classes = list(getattr(train, "classes", [])) or [str(i) for i in range(int(y_tr.max()) + 1)]
        return ImageData(
            name=name,
            train_images=(x_tr - m) / s,
            train_labels=y_tr,
            test_images=(x_te - m) / s,
            test_labels=y_te,
            num_classes=len(classes),
            mean=mean,
            std=std,
            class_names=[str(c) for c in classes],
        )


for _name in _SPECS:
    _make_loader(_name)
