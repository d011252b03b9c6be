"""Image folders (decoding, the tensor cache, bad folders), the validation split, fashion_mnist from ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fedcl.data.imagefolder as imagefolder
from fedcl.data import ImageData, load_dataset, stratified_holdout
from fedcl.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]


def _save(path: Path, size: tuple[int, int], mode: str, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def _folder(root: Path, classes: tuple[str, ...] = ("cat", "dog", "owl"), per_class: int = 3,
            sizes: bool = True) -> Path:
    """A tiny folder: PNG and JPEG, grey and RGB, of different sizes when ``sizes``."""
    k = 0
    for split, n in (("train", per_class), ("test", 2)):
        for c in classes:
            for i in range(n):
                k += 1
                size = (8 + k % 3 * 4, 10 + k % 2 * 6) if sizes else (12, 12)
                mode = "L" if k % 2 else "RGB"
                _save(root / split / c / f"{i}.{'png' if k % 3 else 'jpg'}", size, mode, k)
    return root


@pytest.fixture
def decodes(monkeypatch) -> list[Path]:
    """Every image decoded by the loader (the cache is hit when none is)."""
    seen: list[Path] = []
    real = imagefolder._decode

    def counting(path: Path, image_size: int | None) -> np.ndarray:
        seen.append(path)
        return real(path, image_size)

    monkeypatch.setattr(imagefolder, "_decode", counting)
    return seen


def test_image_folder_loads_resizes_and_normalises(tmp_path: Path, decodes: list[Path]) -> None:
    root = _folder(tmp_path / "pets")
    data = load_dataset("imagefolder", root, image_size=16)
    assert data.name == "imagefolder" and data.class_names == ["cat", "dog", "owl"] and data.num_classes == 3
    assert data.image_shape == (3, 16, 16)  # RGB because some images have colour; grey ones repeat
    assert data.train_images.shape[0] == 9 and data.test_images.shape[0] == 6
    assert data.train_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert len(decodes) == 15
    # normalised with the training images' per-channel mean/std
    flat = data.train_images.transpose(0, 1).reshape(3, -1)
    assert torch.allclose(flat.mean(1), torch.zeros(3), atol=1e-4)
    assert torch.allclose(flat.std(1, unbiased=False), torch.ones(3), atol=1e-3)
    assert all(0 < m < 1 for m in data.mean) and len(data.std) == 3


def test_grey_folder_has_one_channel_and_keeps_its_size(tmp_path: Path) -> None:
    root = tmp_path / "g"
    for split in ("train", "test"):
        for c in ("a", "b"):
            _save(root / split / c / "x.png", (9, 7), "L", len(c))
    data = load_dataset("imagefolder", root)
    assert data.image_shape == (1, 7, 9)


def test_cache_is_reused_and_rebuilt_when_the_folder_changes(tmp_path: Path, decodes: list[Path]) -> None:
    root = _folder(tmp_path / "pets")
    first = load_dataset("imagefolder", root, image_size=12)
    cached = list((root / ".fedcl-cache").glob("*.safetensors"))
    assert len(cached) == 1 and not list((root / ".fedcl-cache").glob(".tmp-*"))
    decodes.clear()
    again = load_dataset("imagefolder", root, image_size=12)
    assert decodes == []  # read from the cache, nothing decoded
    assert torch.equal(first.train_images, again.train_images) and again.mean == first.mean
    load_dataset("imagefolder", root, image_size=10)  # another size is another entry
    assert len(decodes) == 15
    decodes.clear()
    _save(root / "train" / "dog" / "new.png", (20, 20), "RGB", 99)
    grown = load_dataset("imagefolder", root, image_size=12)
    assert len(decodes) == 16 and grown.train_images.shape[0] == 10
    assert len(list((root / ".fedcl-cache").glob("*.safetensors"))) == 1  # the stale entries are gone


def test_corrupt_cache_is_decoded_again(tmp_path: Path, decodes: list[Path]) -> None:
    root = _folder(tmp_path / "pets")
    first = load_dataset("imagefolder", root, image_size=12)
    (entry,) = (root / ".fedcl-cache").glob("*.safetensors")
    blob = bytearray(entry.read_bytes())
    entry.write_bytes(bytes(blob[: len(blob) - 50]))  # truncated
    decodes.clear()
    assert torch.equal(load_dataset("imagefolder", root, image_size=12).train_images, first.train_images)
    assert len(decodes) == 15
    blob = bytearray(entry.read_bytes())
    blob[-3] ^= 0xFF  # one flipped pixel: the checksum catches it
    entry.write_bytes(bytes(blob))
    decodes.clear()
    assert torch.equal(load_dataset("imagefolder", root, image_size=12).train_images, first.train_images)
    assert len(decodes) == 15


def test_unwritable_folder_caches_under_fedcl_cache(tmp_path: Path, monkeypatch, decodes: list[Path]) -> None:
    root = _folder(tmp_path / "pets", sizes=False)
    (root / ".fedcl-cache").write_text("a file where the cache folder would go")  # mkdir fails, as read-only would
    monkeypatch.setenv("FEDCL_CACHE", str(tmp_path / "user-cache"))
    load_dataset("imagefolder", root)
    assert len(list((tmp_path / "user-cache" / "imagefolder").glob("pets-*.safetensors"))) == 1
    decodes.clear()
    load_dataset("imagefolder", root)
    assert decodes == []


def _bad(tmp_path: Path, kind: str) -> Path:
    root = _folder(tmp_path / kind, classes=("a", "b"), per_class=1, sizes=False)
    if kind == "no_test":
        for f in (root / "test").rglob("*"):
            if f.is_file():
                f.unlink()
        for d in sorted((root / "test").rglob("*"), reverse=True):
            d.rmdir()
        (root / "test").rmdir()
    elif kind == "no_classes":
        root = tmp_path / "empty"
        (root / "train").mkdir(parents=True)
        (root / "test").mkdir()
    elif kind == "differ":
        (root / "test" / "b").rename(root / "test" / "c")
    elif kind == "non_image":
        (root / "train" / "a" / "notes.txt").write_text("hello")
    elif kind == "unreadable":
        (root / "train" / "b" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    elif kind == "sizes":
        _save(root / "test" / "a" / "big.png", (30, 30), "L", 5)
    elif kind == "empty_class":
        (root / "train" / "c").mkdir()
        (root / "test" / "c").mkdir()
    elif kind == "stray_file":
        _save(root / "train" / "loose.png", (12, 12), "L", 1)
    return root


@pytest.mark.parametrize(("kind", "message"), [
    ("missing", r"not found: expected DIR/train/<class>.*data\.root"),
    ("no_test", r"has no test/ folder"),
    ("no_classes", r"has no class folders"),
    ("differ", r"classes differ between train/ and test/.*only in train: b; only in test: c"),
    ("non_image", r"notes\.txt is not a PNG or JPEG image"),
    ("unreadable", r"cannot decode .*broken\.jpg"),
    ("sizes", r"images differ in size; set data\.image_size"),
    ("empty_class", r"class folder .*c holds no images"),
    ("stray_file", r"loose\.png is a file where train/ holds one folder per class"),
])
def test_bad_folders_end_with_one_clear_line(tmp_path: Path, kind: str, message: str) -> None:
    root = tmp_path / "nowhere" if kind == "missing" else _bad(tmp_path, kind)
    with pytest.raises(DataError, match=message) as info:
        load_dataset("imagefolder", root)
    assert "\n" not in str(info.value)
    assert not list(root.glob(".fedcl-cache/*"))  # nothing written


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="image_size"):
        load_dataset("digits", image_size=0)
    with pytest.raises(ConfigError, match=r"val_fraction must be in \[0, 1\)"):
        load_dataset("digits", val_fraction=1.0)
    with pytest.raises(ConfigError, match="holds out no image"):
        stratified_holdout(torch.tensor([0, 1, 2]), 0.1)


def test_tensor_datasets_resize_too(digits: ImageData) -> None:
    big = load_dataset("digits", image_size=16)
    assert big.image_shape == (1, 16, 16) and big.test_images.shape[-1] == 16
    assert torch.equal(big.train_labels, digits.train_labels)


def test_validation_split_is_stratified_disjoint_and_seeded(digits: ImageData) -> None:
    data = load_dataset("digits", val_fraction=0.2)
    n = digits.train_images.shape[0]
    assert data.val_images is not None and data.val_labels is not None
    assert data.train_images.shape[0] + data.val_images.shape[0] == n
    counts = torch.bincount(data.val_labels, minlength=10)
    full = torch.bincount(digits.train_labels, minlength=10)
    assert torch.all((counts - 0.2 * full).abs() <= 0.5 + 1e-6)  # stratified: each class rounds 20 %
    keep, val = stratified_holdout(digits.train_labels, 0.2, seed=0)
    assert not set(keep.tolist()) & set(val.tolist()) and len(keep) + len(val) == n  # disjoint, complete
    assert torch.equal(data.val_images, digits.train_images[val])
    assert torch.equal(data.train_images, digits.train_images[keep])
    again = load_dataset("digits", val_fraction=0.2)
    assert torch.equal(again.val_labels, data.val_labels) and torch.equal(again.val_images, data.val_images)
    other = stratified_holdout(digits.train_labels, 0.2, seed=1)[1]
    assert not torch.equal(other, val)  # the seed picks the split
    assert data.mean == digits.mean and torch.equal(data.test_images, digits.test_images)
    view = data.for_evaluation("val")
    assert torch.equal(view.test_labels, data.val_labels) and data.for_evaluation("test") is data
    with pytest.raises(ConfigError, match="eval.split=val needs a validation split"):
        digits.for_evaluation("val")
    with pytest.raises(ConfigError, match="eval.split must be one of"):
        data.for_evaluation("train")


def test_distill_reports_validation_accuracy(tmp_path: Path) -> None:
    import json

    from fedcl.commands import distill_main

    out = tmp_path / "run"
    common = ["method=random", "ipc=2", "eval.models=1", "eval.epochs=2", "model=mlp", "model_kwargs.width=16",
              f"out={out}"]
    with pytest.raises(ConfigError, match="data.val_fraction"):
        distill_main([*common, "eval.split=val"])
    assert not out.exists()
    assert distill_main([*common, "eval.split=val", "data.val_fraction=0.1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "val_accuracy" in metrics and "test_accuracy" not in metrics


def _shared() -> Path | None:
    for root in (os.environ.get("FEDCL_DATA"), *(base / "shared" / "data" for base in REPO.parents)):
        if root and (Path(root) / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists():
            return Path(root)
    return None


def test_fashion_mnist_from_shared_data() -> None:
    root = _shared()
    if root is None:
        pytest.skip("Fashion-MNIST not found (set FEDCL_DATA or provide ../shared/data)")
    data = load_dataset("fashion_mnist", root)
    assert data.image_shape == (1, 28, 28) and data.num_classes == 10
    assert data.train_images.shape[0] == 60000 and data.test_images.shape[0] == 10000
    assert data.class_counts() == [6000] * 10 and data.class_names[0] == "T-shirt/top"
    assert abs(float(data.train_images.mean())) < 0.01 and abs(float(data.train_images.std()) - 1) < 0.01


def test_continual_benchmarks_take_the_data_options(digits: ImageData) -> None:
    from fedcl.continual import make_benchmark

    bench = make_benchmark("split_digits", image_size=16, val_fraction=0.1)
    assert bench.in_shape == (1, 16, 16) and bench.data.val_images is not None
    assert bench.data.train_images.shape[0] < digits.train_images.shape[0]
