"""A safetensors cache of decoded images, keyed by what was decoded, written atomically.

An entry lives in ``DIR/.fedcl-cache/`` beside the data, or, where that folder cannot be
written (a read-only share), under ``$FEDCL_CACHE`` (default ``~/.cache/fedcl``). An entry
whose key, checksums or shapes do not match is ignored (and decoded again): never loaded half.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
import zlib
from pathlib import Path
from typing import Any

import torch

from fedcl.errors import DataError

__all__ = ["cache_dirs", "load_entry", "save_entry", "user_cache_dir"]

_FORMAT = "fedcl-tensor-cache-v1"


def user_cache_dir() -> Path:
    """``$FEDCL_CACHE``, else ``~/.cache/fedcl``."""
    return Path(os.environ.get("FEDCL_CACHE") or "~/.cache/fedcl").expanduser()


def cache_dirs(root: Path) -> list[Path]:
    """Where an entry for the data under ``root`` may live, tried in this order."""
    return [root / ".fedcl-cache", user_cache_dir() / "imagefolder"]


def _prefix(root: Path) -> str:
    # The folder's name (readable) and a hash of its absolute path (two folders named "data" differ).
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", root.resolve().name) or "root"
    return f"{name}-{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]}"


def _crc(t: torch.Tensor) -> str:
    return f"{zlib.crc32(t.contiguous().view(torch.uint8).numpy()):08x}"


def load_entry(root: Path, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The tensors and JSON metadata cached for ``root`` under ``key``, or None (absent or damaged)."""
    from fedcl.utils import read_safetensors

    def check(header: dict[str, str]) -> None:
        if header.get("key") != key:
            raise DataError(f"a cache entry for another key ({header.get('key')!r})")

    for folder in cache_dirs(root):
        path = folder / f"{_prefix(root)}-{key}.safetensors"
        if not path.is_file():
            continue
        try:
            header, tensors = read_safetensors(path, "decoded-image cache", formats=(_FORMAT,), check=check)
            crcs = json.loads(header["crc"])
            if set(crcs) != set(tensors) or any(_crc(tensors[k]) != v for k, v in crcs.items()):
                continue
            return tensors, json.loads(header["meta"])
        except Exception:  # truncated, foreign or corrupt file: decode again
            continue
    return None


def save_entry(root: Path, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path | None:
    """Write an entry atomically (temp file + rename) in the first writable cache folder.

    Older entries for the same ``root`` in that folder are removed. Returns the path, or None
    (with a warning) where no folder can be written: the data is then decoded again next time.
    """
    from fedcl.utils import save_safetensors

    header = {"format": _FORMAT, "key": key, "meta": json.dumps(meta),
              "crc": json.dumps({k: _crc(v) for k, v in tensors.items()})}
    errors = []
    for folder in cache_dirs(root):
        final = folder / f"{_prefix(root)}-{key}.safetensors"
        try:
            save_safetensors(tensors, final, header)  # atomic: a temp file renamed into place
        except Exception as exc:  # read-only, full disk...: try the next folder, never fail the run
            errors.append(f"{folder}: {getattr(exc, 'strerror', None) or exc}")
            continue
        for old in folder.glob(f"{_prefix(root)}-*.safetensors"):
            if old != final:
                old.unlink(missing_ok=True)
        return final
    warnings.warn(f"could not write a cache for {root} ({'; '.join(errors)}): it will be decoded again next time",
                  stacklevel=3)
    return None
