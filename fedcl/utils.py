"""Small shared helpers: seeding, device resolution, progress bars."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = ["progress", "progress_enabled", "resolve_device", "save_safetensors", "seed_everything"]

T = TypeVar("T")


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (CPU and CUDA) from one integer.

    Returns:
        A CPU ``torch.Generator`` seeded with ``seed`` for code that wants its own stream.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) means CUDA when present, else CPU; anything else is passed to torch."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from fedcl.errors import ConfigError

        raise ConfigError(f"device={device} asked for, but CUDA is not available; use device=cpu or auto")
    return dev


def progress_enabled(enabled: bool = True) -> bool:
    """Whether progress bars are shown: on a terminal only; never with ``FEDCL_PROGRESS=0`` or under CI.

    ``$CI`` is set by GitHub Actions, GitLab CI and most other CI systems, some of which give jobs
    a pseudo-terminal; ``FEDCL_PROGRESS=1`` shows bars there anyway.
    """
    setting = os.environ.get("FEDCL_PROGRESS", "")
    if not enabled or setting == "0":
        return False
    if os.environ.get("CI", "").lower() not in ("", "0", "false") and setting != "1":
        return False
    return sys.stderr is not None and sys.stderr.isatty()


def progress(iterable: Iterable[T], *, desc: str = "", total: int | None = None, enabled: bool = True, **kw: Any) -> Iterable[T]:
    """A tqdm bar on a terminal; the plain iterable in CI logs, off a terminal, or when disabled."""
    if not progress_enabled(enabled):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, **kw)


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike[str],
                     metadata: dict[str, str] | None = None) -> str:
    """Write ``tensors`` as safetensors atomically: to a temporary file in the same folder, renamed
    into place, so a failed write leaves nothing half-written (the folder is created)."""
    import tempfile

    from safetensors.torch import save_file

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return str(path)
