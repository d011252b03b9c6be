"""Benchmarks from MNIST-6k (../shared/data or FEDCL_DATA); skipped cleanly when the files are absent."""

from __future__ import annotations

import pytest
import torch

from fedcl.continual.benchmarks import make_benchmark

pytestmark = pytest.mark.mnist


@pytest.fixture(scope="module")
def root(mnist_data_root):
    return mnist_data_root


def test_split_mnist_is_class_incremental(root):
    bench = make_benchmark("split_mnist", root=root, seed=0)
    train, test = bench.scenario.train_stream, bench.scenario.test_stream
    assert len(train) == len(test) == 5
    classes = [set(e.classes_in_this_experience) for e in train]
    assert all(len(c) == 2 for c in classes) and set().union(*classes) == set(range(10))
    assert sum(len(e.dataset) for e in train) == bench.data.train_images.shape[0]
    x, y, t = train[0].dataset[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and int(y) in classes[0] and int(t) == 0


def test_permuted_mnist_keeps_labels_and_permutes_pixels(root):
    bench = make_benchmark("permuted_mnist", root=root, seed=0, n_experiences=2)
    a, b = (e.dataset for e in bench.scenario.train_stream)
    (xa, ya, _), (xb, yb, _) = a[0], b[0]
    assert int(ya) == int(yb) and not torch.equal(xa, xb)
    assert torch.allclose(xa.flatten().sort().values, xb.flatten().sort().values)  # same pixels, new places
