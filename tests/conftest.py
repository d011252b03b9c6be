"""Shared fixtures: bundled digits, optional MNIST from ../shared/data, quiet progress bars."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("FEDCL_PROGRESS", "0")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]


def mnist_root() -> Path | None:
    """``$FEDCL_DATA`` or ``../shared/data`` beside the repository, if it holds MNIST."""
    for root in (os.environ.get("FEDCL_DATA"), REPO.parent / "shared" / "data"):
        if root and (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
            return Path(root)
    return None


@pytest.fixture(autouse=True, scope="session")
def _expert_cache(tmp_path_factory):
    """Expert trajectories trained by tests go to a temporary cache, never the user's."""
    os.environ["FEDCL_CACHE"] = str(tmp_path_factory.mktemp("fedcl-cache"))


@pytest.fixture(scope="session")
def digits():
    """The bundled digits dataset (loaded once per session)."""
    from fedcl.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def mnist_data_root() -> str:
    """The MNIST root (``$FEDCL_DATA`` or ../shared/data); skips cleanly when absent."""
    root = mnist_root()
    if root is None:
        pytest.skip("MNIST files not found (set FEDCL_DATA or provide ../shared/data)")
    return str(root)


@pytest.fixture(scope="session")
def mnist(mnist_data_root):
    """MNIST-6k from ../shared/data; skips cleanly when absent."""
    from fedcl.data import load_dataset

    return load_dataset("mnist", mnist_data_root)


@pytest.fixture
def digits_meta(digits):
    """The metadata the engines expect for digits."""
    return {"dataset": digits.name, "mean": list(digits.mean), "std": list(digits.std)}


def pytest_collection_modifyitems(config, items):
    """GPU tests skip without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
