"""Split benchmarks of image folders (made by the test), Split-Fashion-MNIST and Split-CIFAR-10-JPEG (../shared/data)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedcl.continual.benchmarks import make_benchmark
from fedcl.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]


def _folder(root: Path, classes: int, per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 2)):
        for c in range(classes):
            for i in range(n):
                path = root / split / f"class{c}" / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8), "RGB").save(path)
    return root


def _shared(marker: str) -> Path | None:
    for root in (os.environ.get("FEDCL_DATA"), *(base / "shared" / "data" for base in REPO.parents)):
        if root and (Path(root) / marker).exists():
            return Path(root)
    return None


def test_split_imagefolder_is_class_incremental(tmp_path):
    root = _folder(tmp_path / "pets", classes=4)
    bench = make_benchmark("split_imagefolder", root=str(root), seed=1, n_experiences=2, image_size=8)
    train = bench.scenario.train_stream
    assert len(train) == 2 and bench.num_classes == 4 and bench.in_shape == (3, 8, 8)
    classes = [set(e.classes_in_this_experience) for e in train]
    assert all(len(c) == 2 for c in classes) and set().union(*classes) == set(range(4))
    assert sorted(int(i) for e in train for i in e.dataset.record_ids) == list(range(12))  # each record once


def test_eval_split_val_makes_the_held_out_split_the_test_stream():
    """``eval_split="val"``: the test stream is the validation split, which no training experience holds."""
    test = make_benchmark("split_digits", seed=0, val_fraction=0.2)
    val = make_benchmark("split_digits", seed=0, val_fraction=0.2, eval_split="val")
    held = val.data.test_images
    assert val.data.val_images is not None and torch.equal(held, val.data.val_images)
    assert torch.equal(test.data.test_images, make_benchmark("split_digits", seed=0).data.test_images)
    stream_x = torch.cat([torch.stack([x for x, *_ in e.dataset]) for e in val.scenario.test_stream])
    assert len(stream_x) == len(held)
    seen = {x.numpy().tobytes() for e in val.scenario.train_stream for x, *_ in e.dataset}
    assert not any(x.numpy().tobytes() in seen for x in held)


def test_split_imagefolder_bad_input(tmp_path):
    root = _folder(tmp_path / "three", classes=3)
    with pytest.raises(ConfigError, match="3 classes cannot be split into 5 experiences"):
        make_benchmark("split_imagefolder", root=str(root))
    with pytest.raises(DataError):
        make_benchmark("split_imagefolder", root=str(tmp_path / "nothing-here"))


def test_continual_command_on_an_image_folder(tmp_path):
    from fedcl.continual.command import main

    root = _folder(tmp_path / "pets", classes=4, per_class=4)
    out = tmp_path / "run"
    assert main(["benchmark=split_imagefolder", f"data.root={root}", "n_experiences=2", "mem_size=4",
                 "strategies=[distilled_random]", "epochs=1", "distill.gdumb_epochs=2", "model_kwargs.width=8",
                 "device=cpu", f"out={out}"]) == 0
    assert (out / "metrics.json").exists()


def test_split_fashion_mnist_from_shared_data():
    root = _shared("FashionMNIST/raw/train-images-idx3-ubyte")
    if root is None:
        pytest.skip("Fashion-MNIST not found (set FEDCL_DATA or provide ../shared/data)")
    bench = make_benchmark("split_fashion_mnist", root=str(root), seed=0)
    train = bench.scenario.train_stream
    assert len(train) == 5 and all(len(e.classes_in_this_experience) == 2 for e in train)
    assert all(len(e.dataset) == 12000 for e in train)  # 6,000 images of each of 2 classes
    x, _, _ = train[0].dataset[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32


def test_split_cifar10_jpeg_from_shared_data():
    root = _shared("CIFAR10-JPEG/train")
    if root is None:
        pytest.skip("CIFAR10-JPEG not found (set FEDCL_DATA or provide ../shared/data)")
    bench = make_benchmark("split_cifar10_jpeg", root=str(root), seed=0)
    train, test = bench.scenario.train_stream, bench.scenario.test_stream
    assert len(train) == 5 and bench.in_shape == (3, 32, 32) and bench.data.name == "cifar10_jpeg"
    assert [len(e.dataset) for e in train] == [10000] * 5 and [len(e.dataset) for e in test] == [2000] * 5


def test_benchmarks_come_from_avalanche_current_generators():
    """No deprecated Avalanche scenario or warning; each record id points at its source image and label."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        split = make_benchmark("split_digits", seed=0)
        permuted = make_benchmark("permuted_digits", seed=0, n_experiences=2)
    n = len(split.data.train_labels)
    for bench in (split, permuted):
        train, test = bench.scenario.train_stream, bench.scenario.test_stream
        assert not any("deprecated" in type(o).__module__ for o in (bench.scenario, train, train[0]))
        assert [e.current_experience for e in test] == list(range(len(train))) and train[0].task_labels == [0]
    assert sorted(i for e in split.scenario.train_stream for i in e.dataset.record_ids) == list(range(n))
    assert all(sorted(e.dataset.record_ids) == list(range(n)) for e in permuted.scenario.train_stream)
    exp = split.scenario.train_stream[1]
    ids = list(exp.dataset.record_ids)
    assert set(split.data.train_labels[ids].tolist()) == set(exp.classes_in_this_experience)
    x, y, t = exp.dataset[3]
    assert torch.equal(x, split.data.train_images[ids[3]]) and y == int(split.data.train_labels[ids[3]]) and t == 0


def test_importing_benchmarks_warns_no_deprecation():
    code = "import fedcl.continual.benchmarks, strategies.replay"
    done = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
