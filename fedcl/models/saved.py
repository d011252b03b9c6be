"""Saved networks: safetensors weights plus a JSON header that says how to rebuild them (no pickle).

A file written by :func:`save_model` (format ``fedcl.model/1``) holds the network's
``state_dict`` tensors and, in the safetensors header (string entries):

- ``format``: ``fedcl.model/1``;
- ``model``: the registry name (:func:`fedcl.models.create_model`), ``model_kwargs``: its
  constructor keywords (JSON), ``in_shape``: ``[C, H, W]`` (JSON), ``num_classes``;
- ``fedcl_version``: the version that wrote it;
- ``meta``: JSON facts, at least ``dataset``, ``mean`` and ``std`` (the normalisation the
  network expects), plus whatever the writer adds (``strategy``, ``seed``, ``benchmark`` ...).

:func:`load_model` rebuilds the network from the registry and loads the tensors, refusing with a
:class:`~fedcl.errors.DataError` anything that does not match. :func:`save_memory` writes a
continual run's distilled memory as a :class:`~fedcl.distill.SyntheticSet` (so ``fedcl evaluate``
reads it too) that still restores a ``DistilledBuffer`` (:func:`load_memory_state`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fedcl.errors import ConfigError, DataError
from fedcl.models.registry import MODELS, create_model
from fedcl.utils import read_safetensors, save_safetensors

if TYPE_CHECKING:
    from fedcl.data import ImageData

__all__ = ["FORMAT", "artifact_paths", "check_data", "data_meta", "evaluate_model", "load_memory_state", "load_model", "save_memory", "save_model",
           "saved_kind"]

FORMAT = "fedcl.model/1"
_REQUIRED_META = ("dataset", "mean", "std")


_PLURAL = {"model": "models", "learner": "learners", "memory": "memories"}


def artifact_paths(folder: str | os.PathLike[str], strategy: str, strategies: Sequence[str], *kinds: str,
                   seed: int | None = None, seeds: Sequence[int] = ()) -> list[Path]:
    """Where a run folder keeps the saved files of one strategy's run (one path per ``kind``).

    A folder of one run (one strategy, at most one seed) holds ``<kind>.safetensors``; a folder
    of several holds ``<kinds>/<strategy>.safetensors`` (``<strategy>-seed<k>`` with several
    seeds), e.g. ``models/fedavg.safetensors``, ``learners/distilled-seed1.safetensors``.
    """
    folder = Path(folder)
    if len(strategies) <= 1 and len(seeds) <= 1:
        return [folder / f"{kind}.safetensors" for kind in kinds]
    stem = strategy + (f"-seed{seed}" if len(seeds) > 1 else "")
    return [folder / _PLURAL.get(kind, f"{kind}s") / f"{stem}.safetensors" for kind in kinds]


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, header: dict[str, str]) -> Path:
    """Write safetensors atomically (:func:`fedcl.utils.save_safetensors`)."""
    save_safetensors(tensors, path, header)
    return path


def _build(name: str, in_shape: Sequence[int], num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    """``create_model`` without touching the global RNG (saving or loading must not change a run's random stream)."""
    with torch.random.fork_rng(devices=[]):
        return create_model(name, in_shape, num_classes, **kwargs)


def _mismatch(path: object, expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str | None:
    """A one-line description of how ``got``'s names or shapes differ from ``expected``'s (None: they match)."""
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    shapes = [f"{k} {tuple(got[k].shape)} != {tuple(expected[k].shape)}" for k in sorted(set(expected) & set(got))
              if tuple(got[k].shape) != tuple(expected[k].shape)]
    parts = ([f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"] if missing else []) + \
            ([f"unexpected {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}"] if extra else []) + \
            ([f"shapes {'; '.join(shapes[:3])}{' ...' if len(shapes) > 3 else ''}"] if shapes else [])
    return f"{path}: " + "; ".join(parts) if parts else None


def save_model(path: str | os.PathLike[str], model: nn.Module, *, name: str, kwargs: dict[str, Any] | None = None,
               in_shape: tuple[int, int, int], num_classes: int, meta: dict[str, Any]) -> Path:
    """Write ``model``'s tensors and how to rebuild it (format ``fedcl.model/1``), atomically.

    Args:
        path: the file to write (its folder is created).
        model: the trained network; its ``state_dict`` is saved (on the CPU).
        name: its registry name (``create_model(name, in_shape, num_classes, **kwargs)`` rebuilds it).
        kwargs: the constructor keywords it was built with (JSON values).
        in_shape: ``(C, H, W)`` of its input.
        num_classes: its output size.
        meta: JSON facts; must name ``dataset``, ``mean`` and ``std`` (the normalisation it expects).

    Raises:
        ConfigError: ``meta`` lacks a required fact, a value is not JSON, or the header would not
            rebuild a network with ``model``'s tensor names and shapes.
    """
    from fedcl import __version__

    kwargs = dict(kwargs or {})
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise ConfigError(f"save_model: meta must name {', '.join(missing)} (the data the model expects)")
    try:
        header = {"format": FORMAT, "model": name, "model_kwargs": json.dumps(kwargs, sort_keys=True),
                  "in_shape": json.dumps([int(v) for v in in_shape]), "num_classes": str(int(num_classes)),
                  "fedcl_version": __version__, "meta": json.dumps(meta, sort_keys=True)}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"save_model: kwargs and meta must be JSON values: {exc}") from None
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # refuse a header that lies: what it says must rebuild exactly these tensors
    problem = _mismatch(f"save_model({name})", _build(name, in_shape, num_classes, kwargs).state_dict(), state)
    if problem:
        raise ConfigError(f"{problem} (the model was not built by create_model({name!r}, ..., **kwargs))")
    return _atomic_save(state, Path(path), header)


def saved_kind(path: str | os.PathLike[str]) -> str:
    """``"model"`` or ``"synthetic"``: what a fedcl safetensors file holds, from its header.

    Raises:
        DataError: no such file, an unreadable file, or a header of neither kind.
    """
    from fedcl.distill.synthetic import FORMATS

    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path} (give a synthetic.safetensors or a saved model written by fedcl)")
    # the header only: the tensors are read by whichever loader the format names
    header, _ = read_safetensors(path, "fedcl synthetic set or saved model", tensors=False)
    fmt = header.get("format", "")
    if fmt.startswith("fedcl.model/"):
        return "model"
    if fmt in FORMATS:
        return "synthetic"
    raise DataError(f"{path} is neither a fedcl synthetic set nor a saved model (format {fmt or None!r})")


def load_model(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network saved by :func:`save_model` (in eval mode) and return it with its facts.

    Returns:
        ``(model, meta)``: ``meta`` holds the header's ``format``, ``model``, ``model_kwargs``,
        ``in_shape``, ``num_classes`` and ``fedcl_version`` besides the saved facts (``dataset``,
        ``mean``, ``std`` ...).

    Raises:
        DataError: a missing or unreadable file, another format, a header naming an unknown
            model or keywords it refuses, or tensors that do not match the rebuilt network's
            ``state_dict`` (names, shapes, non-finite values).
    """
    path = Path(path)

    def check(header: dict[str, str]) -> None:
        fmt = header.get("format")
        if fmt != FORMAT:
            hint = " (a newer fedcl wrote it; upgrade fedcl)" if str(fmt).startswith("fedcl.model/") else \
                " (a synthetic set: `fedcl evaluate` trains models on it)" if str(fmt).startswith("fedcl.synthetic/") \
                else ""
            raise DataError(f"{path} is not a fedcl saved model (format {fmt!r}, expected {FORMAT}){hint}")

    header, tensors = read_safetensors(path, "fedcl saved model", check=check)
    fmt = header["format"]
    try:
        name = header["model"]
        kwargs = json.loads(header["model_kwargs"])
        in_shape = tuple(int(v) for v in json.loads(header["in_shape"]))
        num_classes = int(header["num_classes"])
        meta = json.loads(header["meta"])
        if not (isinstance(kwargs, dict) and isinstance(meta, dict) and len(in_shape) == 3):
            raise ValueError("model_kwargs and meta must be objects, in_shape [C, H, W]")
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: malformed saved-model header ({type(exc).__name__}: {exc})") from None
    if name not in MODELS:
        raise DataError(f"{path}: the header names model {name!r}, which is not registered; "
                        f"registered: {', '.join(MODELS.names())}")
    try:
        model = _build(name, in_shape, num_classes, kwargs)
    except Exception as exc:  # noqa: BLE001  (any constructor failure means a header it cannot rebuild)
        raise DataError(f"{path}: cannot rebuild {name} from the header ({type(exc).__name__}: {exc})") from None
    problem = _mismatch(path, model.state_dict(), tensors)
    if problem:
        raise DataError(f"{problem} (tensors do not match the rebuilt {name})")
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise DataError(f"{path}: non-finite values in {', '.join(bad[:3])}")
    model.load_state_dict(tensors, strict=True)
    info = {**meta, "format": fmt, "model": name, "model_kwargs": kwargs, "in_shape": list(in_shape),
            "num_classes": num_classes, "fedcl_version": header.get("fedcl_version")}
    return model.to(device).eval(), info


def data_meta(data: ImageData) -> dict[str, Any]:
    """The facts :func:`save_model` needs about the training data: ``dataset``, ``mean``, ``std``."""
    return {"dataset": data.name, "mean": [float(v) for v in data.mean], "std": [float(v) for v in data.std]}


def check_data(meta: dict[str, Any], data: ImageData, path: object = "saved model") -> None:
    """DataError unless ``data``'s image shape and class count are the model's (``meta`` from :func:`load_model`)."""
    if tuple(meta["in_shape"]) != tuple(data.image_shape):
        hint = f"; pass data.image_size={meta['in_shape'][1]}" if meta["in_shape"][0] == data.image_shape[0] else ""
        raise DataError(f"{path}: the model takes images of shape {tuple(meta['in_shape'])}, {data.name} has "
                        f"{tuple(data.image_shape)}{hint}")
    if int(meta["num_classes"]) != int(data.num_classes):
        raise DataError(f"{path}: the model has {meta['num_classes']} classes, {data.name} has {data.num_classes}")


def evaluate_model(model: nn.Module, meta: dict[str, Any], data: ImageData, *,
                   device: str | torch.device = "auto") -> dict[str, Any]:
    """Accuracy of a loaded model on ``data``'s test images (``data.for_evaluation("val")`` for validation).

    The images are mapped from ``data``'s normalisation to the one the model was trained with
    (``meta["mean"]``, ``meta["std"]``), so a model trained on another dataset's statistics
    still sees pixels as it learned them.

    Returns:
        ``{"accuracy", "class_accuracy", "images"}``.
    """
    from fedcl.train import class_accuracy, predict

    check_data(meta, data)
    images = data.test_images
    if list(meta["mean"]) != list(data.mean) or list(meta["std"]) != list(data.std):
        view = (1, -1, 1, 1)
        pixels = images * torch.tensor(data.std).view(view) + torch.tensor(data.mean).view(view)
        images = (pixels - torch.tensor(meta["mean"]).view(view)) / torch.tensor(meta["std"]).view(view)
    pred = predict(model, images.float(), device=device)
    labels = data.test_labels
    return {"accuracy": int((pred == labels).sum()) / max(len(labels), 1),
            "class_accuracy": class_accuracy(pred, labels, data.num_classes), "images": int(len(labels))}


# ---- continual memories -------------------------------------------------------------------------------------------
_BUFFER_TENSORS = ("images", "labels")


def save_memory(path: str | os.PathLike[str], buffer: Any, meta: dict[str, Any]) -> Path:
    """Write a ``DistilledBuffer``'s memory as a SyntheticSet file (atomically).

    The images and labels are the set (``fedcl evaluate`` trains models on it); the rest of
    the buffer's ``state_dict()`` (classes, tasks, sizes, the privacy ledger) goes to
    ``meta["buffer"]`` as JSON, so :func:`load_memory_state` restores the buffer.

    Args:
        path: the file to write.
        buffer: an object with ``state_dict()`` returning ``images``, ``labels`` and other tensors
            (``strategies.replay.DistilledBuffer``), plus ``method`` and ``num_classes``.
        meta: dataset facts (``dataset``, ``mean``, ``std``) and anything else to record.
    """
    from fedcl.distill.synthetic import SyntheticSet

    state = buffer.state_dict()
    labels = state["labels"].long()
    num_classes = int(getattr(buffer, "num_classes", None) or (int(labels.max()) + 1 if labels.numel() else 1))
    rest = {k: {"dtype": str(v.dtype).removeprefix("torch."), "value": v.tolist()}
            for k, v in state.items() if k not in _BUFFER_TENSORS}
    syn = SyntheticSet(state["images"].detach().float().cpu(), labels.cpu(), num_classes,
                       {**meta, "method": getattr(buffer, "method", meta.get("method")), "buffer": rest})
    return syn.save(path)


def load_memory_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of the buffer saved by :func:`save_memory` (for ``DistilledBuffer.load_state_dict``).

    Raises:
        DataError: not a saved memory (a synthetic set without ``meta["buffer"]``).
    """
    from fedcl.distill.synthetic import SyntheticSet

    syn = SyntheticSet.load(path)
    rest = syn.meta.get("buffer")
    if not isinstance(rest, dict):
        raise DataError(f"{path} is a synthetic set but not a saved replay memory (no buffer state)")
    try:
        state = {k: torch.tensor(v["value"], dtype=getattr(torch, v["dtype"])) for k, v in rest.items()}
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: malformed buffer state ({exc})") from None
    return {"images": syn.images, "labels": syn.hard_labels, **state}
