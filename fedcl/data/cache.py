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
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import Any

import torch

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
    from safetensors import safe_open

    for folder in cache_dirs(root):
        path = folder / f"{_prefix(root)}-{key}.safetensors"
        if not path.is_file():
            continue
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                if header.get("format") != _FORMAT or header.get("key") != key:
                    continue
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
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
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in tensors.items()}
    header = {"format": _FORMAT, "key": key, "meta": json.dumps(meta),
              "crc": json.dumps({k: _crc(v) for k, v in tensors.items()})}
    errors = []
    for folder in cache_dirs(root):
        tmp = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".safetensors")
            os.close(fd)
            save_file(tensors, tmp, metadata=header)
            final = folder / f"{_prefix(root)}-{key}.safetensors"
            os.replace(tmp, final)
        except Exception as exc:  # read-only, full disk...: try the next folder, never fail the run
            errors.append(f"{folder}: {getattr(exc, 'strerror', None) or exc}")
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            continue
        for old in folder.glob(f"{_prefix(root)}-*.safetensors"):
            if old != final:
                old.unlink(missing_ok=True)
        return final
    warnings.warn(f"could not write a cache for {root} ({'; '.join(errors)}): it will be decoded again next time",
                  stacklevel=3)
    return None
