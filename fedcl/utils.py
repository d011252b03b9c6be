"""Small shared helpers: seeding, device resolution, progress bars."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Collection, Iterable
from typing import Any, TypeVar

import numpy as np
import torch

from fedcl.errors import DataError

__all__ = ["progress", "progress_enabled", "read_safetensors", "resolve_device", "save_safetensors", "seed_everything"]

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


def read_safetensors(path: str | os.PathLike[str], what: str, *, formats: Collection[str] | None = None,
                     check: Callable[[dict[str, str]], None] | None = None,
                     tensors: bool = True) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Read a fedcl safetensors file: its string header, then (``tensors=True``) all its tensors.

    The one reader of fedcl's files (synthetic sets, saved models, expert trajectories, decoded-image
    caches): the header is checked before any tensor is read, and every failure is one line that
    names the file and ``what`` it should be.

    Args:
        path: the file.
        what: what the file should hold, for the messages (``"fedcl synthetic set"``).
        formats: the header's ``format`` must be one of these (None: any).
        check: called with the header before the tensors are read; raises to refuse the file.
        tensors: False reads the header only (the second item is then empty).

    Raises:
        DataError: no such file, an unreadable (truncated, garbled, foreign) file, or another format;
            whatever ``check`` raises.
    """
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise DataError(f"no such {what}: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            if formats is not None and header.get("format") not in formats:
                raise DataError(f"{path} is not a {what} (format {header.get('format')!r}, expected "
                                f"{' or '.join(sorted(formats))})")
            if check is not None:
                check(header)
            out = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}  # noqa: SIM118 (no __iter__)
    except DataError:
        raise
    except Exception as exc:  # safetensors raises several types on corrupt input
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path} is not a readable {what}: {reason}") from None
    return header, out
