"""One folder per run, written atomically: a failed run leaves nothing half-written."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedcl.config import config_to_yaml
from fedcl.errors import ConfigError

__all__ = ["final_path", "run_folder", "save_config", "write_json"]

_MARKER = "config.yaml"  # every fedcl run folder has one


@contextmanager
def run_folder(out: str | None, default_name: str, *, base: str | Path = "runs") -> Iterator[Path]:
    """Yield a temporary folder that becomes ``out`` (or ``base/default_name-TIMESTAMP``) on success.

    An existing ``out`` is replaced only if it is a fedcl run folder (it has config.yaml);
    any other existing, non-empty folder is refused. On an exception the temporary folder
    is removed and nothing at ``out`` changes.
    """
    target = Path(out) if out else Path(base) / f"{default_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / _MARKER).exists())):
        raise ConfigError(f"out={target} exists and is not a fedcl run folder; choose another out")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    _final[tmp] = target


# the final location of each finished temporary folder, so callers can print it
_final: dict[Path, Path] = {}


def final_path(tmp: Path) -> Path:
    """Where the run written in ``tmp`` ended up."""
    return _final.get(tmp, tmp)


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become None; tuples become lists; tensors/numpy scalars become floats."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 0) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NaN/inf as null)."""
    path = Path(path)
    path.write_text(json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")
    return path


def save_config(folder: str | Path, cfg: Any) -> Path:
    """Write the resolved config as ``config.yaml`` in ``folder``."""
    path = Path(folder) / _MARKER
    path.write_text(config_to_yaml(cfg))
    return path
