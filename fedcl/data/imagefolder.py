"""Users' own images: ``DIR/train/<class>/*`` and ``DIR/test/<class>/*`` (PNG or JPEG).

Images of any size and channel count are decoded once (PIL) to 8-bit grey or RGB (RGB when any
image has colour; alpha is dropped), resized to ``image_size`` x ``image_size`` when it is set,
normalised with the per-channel mean/std of the training images, and cached as safetensors (see
:mod:`fedcl.data.cache`), keyed by the sorted file list with sizes and mtimes and ``image_size``:
a changed folder is decoded again. Hidden files (``.name``) are skipped. Classes are the folder
names in sorted order, as in ``torchvision.datasets.ImageFolder``.

Registered names: ``imagefolder`` (``data.root=DIR``) and ``cifar10_jpeg`` (``DIR=<data root>/CIFAR10-JPEG``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from fedcl.data.base import ImageData
from fedcl.data.cache import load_entry, save_entry
from fedcl.data.registry import register_dataset
from fedcl.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "load_image_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_SPLITS = ("train", "test")
_LAYOUT = "DIR/train/<class>/*.png|jpg and DIR/test/<class>/*"


def _visible(path: Path) -> list[os.DirEntry[str]]:
    # os.scandir, not Path.iterdir: a DirEntry knows file from folder without a stat (60,000 files)
    with os.scandir(path) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def scan(root: Path, *, require_test: bool = True) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """The sorted classes and, per split, ``(file, label)`` in a fixed order; DataError on a bad layout.

    With ``require_test=False`` a missing ``test/`` is an empty test split (a federated node's own
    folder: only its training images are distilled).
    """
    if not root.is_dir():
        raise DataError(f"image folder {root} not found: expected {_LAYOUT}; set data.root=DIR")
    per_split: dict[str, dict[str, list[Path]]] = {}
    for split in _SPLITS:
        top = root / split
        if split == "test" and not require_test and not top.exists():
            per_split[split] = dict.fromkeys(per_split["train"], [])
            continue
        if not top.is_dir():
            raise DataError(f"image folder {root} has no {split}/ folder: expected {_LAYOUT}; set data.root=DIR")
        entries = _visible(top)
        stray = [e.path for e in entries if not e.is_dir()]
        if stray:
            raise DataError(f"{stray[0]} is a file where {split}/ holds one folder per class; move it into a class folder")
        if not entries:
            raise DataError(f"{top} has no class folders: put each class's images in {split}/<class>/")
        per_split[split] = {}
        for folder in entries:
            files = _visible(Path(folder.path))
            for f in files:
                if not f.is_file() or not f.name.lower().endswith(IMAGE_SUFFIXES):
                    raise DataError(f"{f.path} is not a PNG or JPEG image; class folders hold images only")
            if not files:
                raise DataError(f"class folder {folder.path} holds no images")
            per_split[split][folder.name] = [Path(f.path) for f in files]
    train, test = set(per_split["train"]), set(per_split["test"])
    if train != test:
        raise DataError(f"classes differ between train/ and test/ of {root}: only in train: "
                        f"{', '.join(sorted(train - test)) or '-'}; only in test: {', '.join(sorted(test - train)) or '-'}")
    classes = sorted(train)
    files = {s: [(f, i) for i, c in enumerate(classes) for f in per_split[s][c]] for s in _SPLITS}
    return classes, files


def cache_key(root: Path, files: dict[str, list[tuple[Path, int]]], image_size: int | None) -> str:
    """A hash of the sorted file list with sizes and mtimes, and of ``image_size``."""
    h = hashlib.sha256(f"imagefolder v1 image_size={image_size}\n".encode())
    skip = len(str(root)) + 1
    for split in _SPLITS:
        for f, _ in files[split]:
            st = os.stat(f)
            h.update(f"{str(f)[skip:]}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _decode(path: Path, image_size: int | None) -> np.ndarray:
    """One image as uint8 ``(H, W)`` (grey) or ``(H, W, 3)``; DataError when it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if image_size is not None and img.format == "JPEG":
                img.draft(img.mode, (image_size, image_size))  # decode big JPEGs at a reduced scale: faster
            img.load()
            if img.mode.startswith("I"):  # 16-bit PNG: keep the top 8 bits
                img = Image.fromarray((np.asarray(img).astype(np.int64) // 257).clip(0, 255).astype(np.uint8), "L")
            elif img.mode in ("1", "L", "LA", "F"):
                img = img.convert("L")
            else:
                img = img.convert("RGB")
            if image_size is not None and img.size != (image_size, image_size):
                img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # corrupt or foreign files
        raise DataError(f"cannot decode {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if arr.ndim == 3 and (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
        arr = np.ascontiguousarray(arr[..., 0])  # grey stored as RGB or as a palette: one channel
    return arr


def _decode_all(files: dict[str, list[tuple[Path, int]]], image_size: int | None) -> dict[str, torch.Tensor]:
    arrays: dict[str, list[np.ndarray]] = {s: [] for s in _SPLITS}
    first: tuple[Path, tuple[int, int]] | None = None
    for split in _SPLITS:
        for path, _ in files[split]:
            arr = _decode(path, image_size)
            hw = (int(arr.shape[0]), int(arr.shape[1]))
            if first is None:
                first = (path, hw)
            elif hw != first[1]:
                raise DataError(f"{path} is {hw[1]}x{hw[0]} but {first[0]} is {first[1][1]}x{first[1][0]}: "
                                "images differ in size; set data.image_size=N to resize every image to N x N")
            arrays[split].append(arr)
    channels = 3 if any(a.ndim == 3 for s in _SPLITS for a in arrays[s]) else 1
    out: dict[str, torch.Tensor] = {}
    for split in _SPLITS:
        if not arrays[split]:  # an optional test/ that is absent
            h, w = first[1] if first is not None else (0, 0)
            out[f"{split}_images"] = torch.zeros(0, channels, h, w, dtype=torch.uint8)
            out[f"{split}_labels"] = torch.zeros(0, dtype=torch.int64)
            continue
        stack = np.stack([a if a.ndim == 3 else np.repeat(a[..., None], channels, axis=2) for a in arrays[split]])
        out[f"{split}_images"] = torch.from_numpy(stack).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW
        out[f"{split}_labels"] = torch.tensor([y for _, y in files[split]], dtype=torch.int64)
    return out


def _mean_std(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of uint8 images in [0, 1], in float64, chunk by chunk."""
    c = x.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    sq = torch.zeros(c, dtype=torch.float64)
    for chunk in x.split(4096):
        v = chunk.to(torch.float64).div_(255.0)
        s += v.sum((0, 2, 3))
        sq += v.square().sum((0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / n
    std = (sq / n - mean.square()).clamp_min(0).sqrt()
    return mean.tolist(), [v if v > 1e-8 else 1.0 for v in std.tolist()]  # constant images: no division by 0


def _valid(tensors: dict[str, torch.Tensor], meta: dict, n_classes: int, counts: dict[str, int]) -> bool:
    try:
        for s in _SPLITS:
            x, y = tensors[f"{s}_images"], tensors[f"{s}_labels"]
            if x.dtype != torch.uint8 or x.ndim != 4 or y.dtype != torch.int64:
                return False
            if len(x) != counts[s] or len(y) != counts[s]:
                return False
            if counts[s] and (int(y.min()) < 0 or int(y.max()) >= n_classes):
                return False
        return len(meta["mean"]) == len(meta["std"]) == tensors["train_images"].shape[1]
    except (KeyError, TypeError, RuntimeError):
        return False


def load_image_folder(root: str | Path, image_size: int | None = None, *, name: str = "imagefolder",
                      require_test: bool = True) -> ImageData:
    """Load ``root/train/<class>/*`` and ``root/test/<class>/*`` as a normalised :class:`ImageData`.

    Args:
        root: the folder holding ``train/`` and ``test/``.
        image_size: resize every image to ``image_size`` x ``image_size``; None keeps the size
            (then every image must have the same size).
        name: the dataset name recorded in the result (DSA's strategy and synthetic sets' metadata).
        require_test: False: ``test/`` may be absent (an empty test split).

    Returns:
        The dataset (classes are the sorted folder names); the first call decodes and caches it.

    Raises:
        DataError: a missing ``train/`` or ``test/``, no classes, classes that differ between the two,
            an empty class, a file that is not a PNG or JPEG or cannot be decoded, sizes that differ.
    """
    root = Path(root).expanduser()
    classes, files = scan(root, require_test=require_test)
    key = cache_key(root, files, image_size)
    counts = {s: len(files[s]) for s in _SPLITS}
    hit = load_entry(root, key)
    if hit is not None and _valid(hit[0], hit[1], len(classes), counts):
        tensors, meta = hit
    else:
        tensors = _decode_all(files, image_size)
        mean, std = _mean_std(tensors["train_images"])
        meta = {"classes": classes, "mean": mean, "std": std}
        save_entry(root, key, tensors, meta)
    m = torch.tensor(meta["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(meta["std"], dtype=torch.float32).view(1, -1, 1, 1)
    return ImageData(
        name=name,
        train_images=(tensors["train_images"].float().div_(255.0) - m) / s,
        train_labels=tensors["train_labels"],
        test_images=(tensors["test_images"].float().div_(255.0) - m) / s,
        test_labels=tensors["test_labels"],
        num_classes=len(classes),
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        class_names=list(classes),
    )


@register_dataset("imagefolder")
def _imagefolder(root: Path, download: bool = False, image_size: int | None = None) -> ImageData:
    """``data.root=DIR``: ``DIR/train/<class>/*`` and ``DIR/test/<class>/*`` (nothing to download)."""
    return load_image_folder(root, image_size)


@register_dataset("cifar10_jpeg")
def _cifar10_jpeg(root: Path, download: bool = False, image_size: int | None = None) -> ImageData:
    """All 60,000 CIFAR-10 images as JPEG (quality 75) under ``<data root>/CIFAR10-JPEG`` (../shared/data)."""
    folder = root / "CIFAR10-JPEG"
    if not (folder / "train").is_dir():
        raise DataError(f"dataset 'cifar10_jpeg' not found under {root.resolve()}: expected "
                        "CIFAR10-JPEG/{train,test}/<class>/*.jpg; set data.root or FEDCL_DATA")
    return load_image_folder(folder, image_size, name="cifar10_jpeg")
