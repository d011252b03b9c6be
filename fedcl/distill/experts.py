"""Expert trajectories for trajectory matching: trained once, cached as a versioned artifact.

An *expert* is a network trained on the real training data; its *trajectory* is its flattened
parameters at the start and after every epoch. :func:`train_experts` trains ``num_experts`` of
them (plain SGD, no momentum, no weight decay, DSA augmentation: the settings of the MTT
reference's ``buffer.py``) and saves the trajectories as one safetensors file whose JSON header
records every setting, a hash of the training tensors and a hash of the trajectories.

The cache key hashes all of those settings and the data hash; the file name carries the key, so
different settings never share a file, and a later call with the same settings loads the file
instead of training. A file whose header names other settings (stale) is never loaded; one that
cannot be read, has the wrong shape or fails its content hash (corrupt) is trained again (with a
warning) or, with ``allow_training=False``, refused with one :class:`~fedcl.errors.DataError` line.
Writes go to a temporary file that is renamed into place, so a failed run leaves nothing half-written.

Privacy: the experts read real data only through the access they are handed
(:meth:`~fedcl.distill.access.RealAccess.mean_gradient` of each step's batch). The exact access gives
plain minibatch SGD; the private one (:class:`fedcl.privacy.access.PrivateAccess`) makes it DP-SGD:
every step Poisson-samples the data, clips each example's gradient, adds Gaussian noise once and
divides by the expected batch, and the accountant records the step, so the trajectories (and any
set distilled from them) are one DP release over all experts' steps. A private set of experts is
keyed by its privacy parameters too, and its file records what it spent (``privacy_record``), so a
later run that loads it reports the same cost.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedcl.distill.access import RealAccess
from fedcl.distill.augment import DSA, default_strategy
from fedcl.distill.base import ClassData
from fedcl.errors import ConfigError, DataError
from fedcl.models import create_model
from fedcl.utils import progress as progress_bar
from fedcl.utils import read_safetensors, resolve_device, save_safetensors

__all__ = ["FORMAT", "ExpertSpec", "Experts", "data_hash", "default_cache_dir", "flatten_params", "load_experts",
           "expert_batch", "make_spec", "steps_per_epoch", "train_experts", "train_experts_on"]

#: file format (and version) of a trajectory file; a change makes every older file stale
FORMAT = "fedcl.experts/1"


def default_cache_dir() -> Path:
    """``$FEDCL_CACHE/experts``, else ``~/.cache/fedcl/experts``."""
    root = os.environ.get("FEDCL_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "fedcl") / "experts"


def _sha256(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def data_hash(images: torch.Tensor, labels: torch.Tensor) -> str:
    """SHA-256 of the training tensors (dtype, shape and bytes), in the class-sorted order experts see."""
    return _sha256(images, labels)


def steps_per_epoch(num_examples: int, batch_real: int, num_classes: int) -> int:
    """SGD steps of one expert epoch: ``ceil(N / (batch_real * K))`` (at least 1)."""
    return max(1, math.ceil(int(num_examples) / (int(batch_real) * int(num_classes))))


def flatten_params(net: nn.Module) -> torch.Tensor:
    """Every parameter of ``net`` flattened into one vector, in ``named_parameters`` order."""
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


@dataclass(frozen=True)
class ExpertSpec:
    """Every setting that determines a set of expert trajectories (with the data hash: the cache key).

    Attributes:
        dataset: name recorded with the data (part of the key, so two datasets never share a file).
        model: registry name of the network; ``model_kwargs`` its options.
        in_shape, num_classes: the network's input shape and output size.
        num_experts: how many independently initialised experts.
        epochs: epochs each expert trains (the trajectory holds ``epochs + 1`` checkpoints).
        lr, momentum, weight_decay: the experts' SGD settings.
        batch_real: real images per class in each SGD step (an epoch is ``ceil(N / (batch_real * K))`` steps).
        augmentation: the DSA strategy applied to every minibatch, or None.
        seed: drives the initialisations, the minibatches and the augmentation.
        classes: the classes trained on.
        privacy: None for experts trained without DP; for DP-SGD experts, the release's planned
            parameters (noise multiplier, sample rate, steps, clipping bound, delta, accountant),
            the mechanism's seed and whether it ran in secure mode.
    """

    dataset: str
    model: str
    model_kwargs: dict[str, Any]
    in_shape: tuple[int, ...]
    num_classes: int
    num_experts: int
    epochs: int
    lr: float
    momentum: float
    weight_decay: float
    batch_real: int
    augmentation: str | None
    seed: int
    classes: tuple[int, ...] = field(default=())
    privacy: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready settings (tuples as lists, so a round trip through JSON compares equal); ``privacy``
        appears only for DP experts, so the keys of non-DP experts are those of files written before it."""
        d = json.loads(json.dumps(asdict(self), sort_keys=True))
        if d["privacy"] is None:
            del d["privacy"]
        return d

    def settings_hash(self) -> str:
        """SHA-256 of the settings alone."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()

    def key(self, data_digest: str) -> str:
        """The cache key: a hash of the format, the settings and the data hash (16 hex digits)."""
        blob = json.dumps({"format": FORMAT, "settings": self.as_dict(), "data": data_digest}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def file_name(self, data_digest: str) -> str:
        """``DATASET-MODEL-KEY.safetensors``: readable, and unique per key."""
        tag = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in (self.dataset or "data"))
        return f"{tag}-{self.model}-{self.key(data_digest)}.safetensors"


@dataclass
class Experts:
    """Trajectories of ``num_experts`` experts: ``trajectories[e, t]`` is expert ``e`` after ``t`` epochs.

    Attributes:
        trajectories: float32 ``(num_experts, epochs + 1, num_params)`` on the CPU.
        meta: the file's header (settings, hashes, format).
        path: the cache file.
        source: ``trained`` (this call trained them) or ``cache`` (loaded from ``path``).
    """

    trajectories: torch.Tensor
    meta: dict[str, Any]
    path: Path
    source: str

    @property
    def num_experts(self) -> int:
        return int(self.trajectories.shape[0])

    @property
    def epochs(self) -> int:
        return int(self.trajectories.shape[1]) - 1

    def params(self, expert: int, epoch: int) -> torch.Tensor:
        """Flattened parameters of ``expert`` after ``epoch`` epochs."""
        return self.trajectories[expert, epoch]


#: header entries holding JSON
_JSON = ("settings", "shape", "privacy_record")


def _header(spec: ExpertSpec, digest: str, traj: torch.Tensor, record: dict[str, Any] | None) -> dict[str, str]:
    header = {"format": FORMAT, "key": spec.key(digest), "settings": json.dumps(spec.as_dict(), sort_keys=True),
              "settings_hash": spec.settings_hash(), "data_hash": digest, "trajectories_hash": _sha256(traj),
              "shape": json.dumps(list(traj.shape))}
    if record is not None:
        header["privacy_record"] = json.dumps(record, sort_keys=True)
    return header


def _meta(header: dict[str, str]) -> dict[str, Any]:
    return {k: (json.loads(v) if k in _JSON else v) for k, v in header.items()}


def _save(path: Path, traj: torch.Tensor, header: dict[str, str]) -> None:
    """Write atomically (:func:`fedcl.utils.save_safetensors`)."""
    save_safetensors({"trajectories": traj}, path, header)


class StaleExperts(DataError):
    """The file at the expected path records other settings (never loaded)."""


def load_experts(path: str | os.PathLike[str], spec: ExpertSpec, digest: str, num_params: int) -> Experts:
    """Load and verify a trajectory file for ``spec`` on data with hash ``digest``.

    Raises:
        StaleExperts: the header's format, settings or data hash differ from the ones asked for.
        DataError: the file is missing, unreadable, of the wrong shape or dtype, or fails its content hash.
    """
    path = Path(path)

    def check(header: dict[str, str]) -> None:  # before the (large) trajectories are read
        if header.get("format") != FORMAT or header.get("key") != spec.key(digest) \
                or header.get("settings_hash") != spec.settings_hash() or header.get("data_hash") != digest:
            raise StaleExperts(f"{path} holds expert trajectories for other settings or data (stale)")

    header, tensors = read_safetensors(path, "expert trajectory file", check=check)
    if "trajectories" not in tensors:
        raise DataError(f"{path}: no trajectories tensor")
    traj = tensors["trajectories"]
    want = (spec.num_experts, spec.epochs + 1, num_params)
    if traj.dtype != torch.float32 or tuple(traj.shape) != want:
        raise DataError(f"{path}: trajectories are {traj.dtype} {tuple(traj.shape)}, expected float32 {want}")
    if _sha256(traj) != header.get("trajectories_hash"):
        raise DataError(f"{path}: trajectories fail their content hash (corrupt file)")
    if spec.privacy is not None and "privacy_record" not in header:
        raise DataError(f"{path}: DP expert trajectories without their privacy record (corrupt file)")
    try:
        meta = _meta(header)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: unreadable header entry ({exc}) (corrupt file)") from None
    return Experts(traj, meta, path, "cache")


def _train(real: ClassData, spec: ExpertSpec, device: torch.device, show: bool,
           access: RealAccess | None = None) -> torch.Tensor:
    """Train the experts through ``access`` (default: an exact one); return their trajectories (CPU float32)."""
    classes = list(spec.classes)
    gen = torch.Generator().manual_seed(spec.seed)
    access = access if access is not None else RealAccess(real, classes, spec.batch_real, gen)
    aug = DSA(spec.augmentation) if spec.augmentation else None
    transform = (lambda x: aug.random(x, gen)) if aug is not None else None
    steps = steps_per_epoch(sum(int(real.counts[c]) for c in classes), spec.batch_real, len(classes))
    out = []
    for e in progress_bar(range(spec.num_experts), desc=f"{access.prefix}experts {spec.dataset}", enabled=show):
        torch.manual_seed(spec.seed * 100_003 + e)  # the expert's initialisation
        net = create_model(spec.model, spec.in_shape, spec.num_classes, **spec.model_kwargs).to(device)
        net = access.network(net, first=e == 0)
        net.train()
        params = list(net.parameters())
        velocity = [torch.zeros_like(p) for p in params] if spec.momentum else None
        snaps = [flatten_params(net).cpu()]
        for _ in range(spec.epochs):
            for _ in range(steps):
                access.step()
                grads = access.mean_gradient(access.batch(), net, params, transform)
                with torch.no_grad():
                    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
                        d = g + spec.weight_decay * p if spec.weight_decay else g
                        if velocity is not None:
                            d = velocity[i].mul_(spec.momentum).add_(d)
                        p.sub_(spec.lr * d)
            snaps.append(flatten_params(net).cpu())
        out.append(torch.stack(snaps))
    traj = torch.stack(out).float().contiguous()
    if not torch.isfinite(traj).all():
        raise DataError(f"expert training diverged (non-finite parameters) with lr={spec.lr}; lower lr_teacher")
    return traj


def train_experts_on(real: ClassData, spec: ExpertSpec, *, device: str | torch.device = "auto",
                     cache_dir: str | os.PathLike[str] | None = None, allow_training: bool = True,
                     progress: bool = False, access: RealAccess | None = None) -> Experts:
    """Load the experts of ``spec`` on ``real`` from the cache, or train and cache them (see :func:`train_experts`).

    ``access`` is the door to ``real`` for training (default: an exact one). A private access trains
    DP-SGD experts; ``spec.privacy`` must then describe its release (it keys the cache), and the
    file records what the access spent.
    """
    private = access is not None and access.private
    if private != (spec.privacy is not None):
        raise ConfigError("DP-SGD experts need both a private access and a spec with its privacy parameters")
    digest = data_hash(real.images, real.labels)
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / spec.file_name(digest)
    num_params = sum(p.numel() for p in create_model(spec.model, spec.in_shape, spec.num_classes,
                                                     **spec.model_kwargs).parameters())
    if path.exists():
        try:
            return load_experts(path, spec, digest, num_params)
        except DataError as exc:
            if not allow_training:
                raise
            warnings.warn(f"{exc}; training the experts again", stacklevel=2)
    elif not allow_training:
        raise DataError(f"no cached expert trajectories at {path} and training them is not allowed")
    with torch.random.fork_rng(devices=[]):  # training leaves the caller's global RNG where it was
        traj = _train(real, spec, resolve_device(device), progress, access)
    header = _header(spec, digest, traj, access.record() if private else None)
    _save(path, traj, header)
    return Experts(traj, _meta(header), path, "trained")


def train_experts(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int | None = None,
                  dataset: str = "", model: str = "convnet", model_kwargs: dict[str, Any] | None = None,
                  num_experts: int = 5, epochs: int = 15, lr: float = 0.01, momentum: float = 0.0,
                  weight_decay: float = 0.0, batch_real: int | None = None, dsa: bool = True,
                  dsa_strategy: str | None = None, seed: int = 0, device: str | torch.device = "auto",
                  cache_dir: str | os.PathLike[str] | None = None, allow_training: bool = True,
                  progress: bool = False, classes: Sequence[int] | None = None) -> Experts:
    """Train (or load from the cache) expert trajectories on real data.

    Args:
        images, labels: the real training set ``(N, C, H, W)`` and ``(N,)``, normalised.
        num_classes: output size of the networks; defaults to ``labels.max() + 1``.
        dataset: the dataset's name (recorded and part of the cache key).
        model, model_kwargs: the network (the one the matching engine uses).
        num_experts: experts to train. epochs: epochs each.
        lr, momentum, weight_decay: SGD (the reference: 0.01, 0, 0).
        batch_real: real images per class per step; None: 256 images in all, as the reference's minibatch.
        dsa: augment every minibatch with DSA; dsa_strategy: None picks the dataset's reference strategy.
        seed: drives initialisation, minibatches and augmentation.
        device: where to train.
        cache_dir: the cache folder; None: ``$FEDCL_CACHE/experts`` or ``~/.cache/fedcl/experts``.
        allow_training: False refuses (DataError) instead of training when the cache is missing or corrupt.
        progress: a progress bar over experts on a terminal.
        classes: the classes to train on (default: every class present).

    Returns:
        The :class:`Experts`, with ``source`` saying whether they were trained or loaded.

    Raises:
        ConfigError: a setting out of range.
        DataError: the cache is missing or corrupt and ``allow_training`` is False.
    """
    if images.ndim != 4 or labels.shape != (images.shape[0],):
        raise ConfigError(f"expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}")
    num_classes = int(num_classes if num_classes is not None else int(labels.max()) + 1)
    counts = torch.bincount(labels.cpu(), minlength=num_classes)
    present = tuple(int(c) for c in (classes if classes is not None else range(num_classes)) if counts[c] > 0)
    real = ClassData(images, labels, num_classes, resolve_device(device))
    spec = make_spec(dataset=dataset, model=model, model_kwargs=model_kwargs, in_shape=tuple(images.shape[1:]),
                     num_classes=num_classes, classes=present, num_experts=num_experts, epochs=epochs, lr=lr,
                     momentum=momentum, weight_decay=weight_decay, batch_real=batch_real, dsa=dsa,
                     dsa_strategy=dsa_strategy, seed=seed)
    return train_experts_on(real, spec, device=device, cache_dir=cache_dir, allow_training=allow_training,
                            progress=progress)


def make_spec(*, dataset: str, model: str, model_kwargs: dict[str, Any] | None, in_shape: tuple[int, ...],
              num_classes: int, classes: Sequence[int], num_experts: int, epochs: int, lr: float, momentum: float,
              weight_decay: float, batch_real: int | None, dsa: bool, dsa_strategy: str | None,
              seed: int, privacy: dict[str, Any] | None = None) -> ExpertSpec:
    """A validated :class:`ExpertSpec` (ConfigError on a setting out of range)."""
    if num_experts < 1 or epochs < 1:
        raise ConfigError(f"experts need num_experts >= 1 and epochs >= 1, got {num_experts} and {epochs}")
    if not lr > 0 or momentum < 0 or weight_decay < 0:
        raise ConfigError(f"expert SGD needs lr > 0, momentum >= 0, weight_decay >= 0; got {lr}, {momentum}, {weight_decay}")
    if not classes:
        raise ConfigError("experts need at least one class with examples")
    batch = expert_batch(batch_real, len(classes))
    if batch < 1:
        raise ConfigError(f"batch_real must be at least 1, got {batch_real}")
    augmentation = (dsa_strategy or default_strategy(dataset)) if dsa else None
    if augmentation:
        DSA(augmentation)  # validates the operation names before any training
    return ExpertSpec(dataset=dataset, model=model, model_kwargs=dict(model_kwargs or {}),
                      in_shape=tuple(int(s) for s in in_shape), num_classes=int(num_classes),
                      num_experts=int(num_experts), epochs=int(epochs), lr=float(lr), momentum=float(momentum),
                      weight_decay=float(weight_decay), batch_real=batch, augmentation=augmentation,
                      seed=int(seed), classes=tuple(int(c) for c in classes), privacy=privacy)


def expert_batch(batch_real: int | None, num_classes: int) -> int:
    """Real images per class in an expert's SGD step: ``batch_real``, or 256 in all when it is None."""
    return int(batch_real) if batch_real is not None else max(1, 256 // int(num_classes))
