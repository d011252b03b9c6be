"""The federated task, free of Flower: settings, partitions, models, client distillation, training.

``client_app.py`` and ``server_app.py`` stay thin: they translate Flower messages to the
calls below. Settings travel as one flat dict of kebab-case keys (``TaskSettings.to_record``)
so they fit a Flower ``ConfigRecord`` and ``[tool.flwr.app.config]``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedcl.data import ImageData, load_dataset
from fedcl.data.partition import partition_indices
from fedcl.distill import create_distiller
from fedcl.distill.augment import DSA, default_strategy
from fedcl.models import create_model
from fedcl.train import accuracy, lr_decay_epoch, train_model

__all__ = ["SERVER_BATCH", "SERVER_LR", "TaskSettings", "check_budget", "client_seed", "distill_partition", "load_data",
           "load_partition", "make_model", "perturbed_network_fn", "plan_summary", "standardize_images", "train_global",
           "train_local"]

SERVER_BATCH = 256  # minibatch of the server's training on summaries (and of centralised training)
SERVER_LR = 0.01  # the server's SGD learning rate on summaries: the DC/DM evaluation protocol's (0.03 measured
# no gain over fourteen seeds of the DP config: experiments/results/federated.md, eighteenth session)


@dataclass
class TaskSettings:
    """Everything a client or the server needs to know about the task (kebab-case on the wire).

    Attributes:
        dataset, data_root: what to load (``data_root`` "" means ``$FEDCL_DATA`` / ``./data``).
        partition, alpha, classes_per_client, seed: the federated split (and every other seed).
        method, ipc, iterations, batch_real, lr_img: client distillation (every class a client holds).
        dp_min_class_images: under DP, classes with fewer images are left out. Class sizes are
            public facts in fedcl's DP model (the mechanism divides by the expected batch of each
            class), and the noise of a class mean grows as its size shrinks: a few images give a
            pure-noise summary that would only pollute the server's union (on MNIST at epsilon 1,
            50 and 200 both scored below 100: experiments/results/federated.md).
        dp_lr_img: ``dm`` image learning rate under DP (the private mechanism scales every
            embedding to norm ``max_grad_norm``, so its gradients are ~100x smaller; the
            privacy sweep's MNIST setting is 100).
        codec: summary codec (``float32``, ``float16``, ``uint8``).
        model, width: the network (``width`` 0 keeps the model's default).
        server_epochs: epochs the server trains on the union of summaries (SGD at ``SERVER_LR``).
        server_noise: standard deviation (normalised pixel units) of Gaussian noise added to every
            summary image of each server minibatch, after DSA (0: none). DP summaries carry the
            mechanism's noise unevenly: a small data owner's images are mostly noise texture, which
            a model can learn as a cue for that owner's classes; noise on every image removes the
            cue (+2.7 points on the DP config over five seeds). Post-processing: no privacy cost.
        server_noise_decay: ``server_noise`` is multiplied by this when the server's learning rate falls
            tenfold (half-way through its epochs): 1 keeps it constant; below 1 the last epochs train
            on images closer to the clean ones the model is tested on (0.25: +0.45 points over twenty
            seeds on the DP config). Post-processing: no privacy cost.
        server_standardize: the server scales every summary image to mean 0 and standard deviation 1
            (over its pixels) before training. The matching ConvNet's instance norm makes ``dm``'s
            loss blind to an image's scale, so under DP a summary image's scale grows with the noise
            in its targets and shrinks as epsilon grows; ``server_noise`` is absolute, so without this
            its weight on each image follows that by-product. For epsilon above 1 (with
            ``server_noise=1``: +7.1 points at epsilon 2, +8.8 at epsilon 4 over three seeds;
            experiments/results/federated.md, fourteenth session). Post-processing: no privacy cost.
        local_epochs, lr, batch_size: FedAvg local training (``lr`` also trains the centralised model).
        rho: FedDM perturbation of the global model (relative std of the noise).
        epsilon, delta: DP per release: each summary a client sends is one release at
            ``(epsilon, delta)`` (epsilon 0 means no DP).
        budget: a client's cap on the total epsilon of all its releases, composed by its
            :class:`~fedcl.privacy.PrivacyLedger` (0: no cap, the total is only recorded). A client
            whose next summary would exceed it answers with a refusal instead.
        max_grad_norm, accountant, secure_mode, dp_normalize, dp_center, dp_replay: the rest of the
            client's DP block (:class:`fedcl.privacy.PrivacyConfig`'s fields).
        device: ``auto``, ``cpu``, ``cuda``.
    """

    dataset: str = "digits"
    data_root: str = ""
    partition: str = "dirichlet"
    alpha: float = 0.1
    classes_per_client: int = 2
    seed: int = 0
    method: str = "dm"
    ipc: int = 10
    iterations: int = 200
    batch_real: int = 256
    lr_img: float = 1.0
    dp_lr_img: float = 100.0
    dp_min_class_images: int = 100
    codec: str = "float32"
    model: str = "convnet"
    width: int = 0
    server_epochs: int = 300
    server_noise: float = 0.0
    server_noise_decay: float = 1.0
    server_standardize: bool = False
    local_epochs: int = 1
    lr: float = 0.01
    batch_size: int = 64
    rho: float = 0.05
    epsilon: float = 0.0
    delta: float = 1e-5
    budget: float = 0.0
    max_grad_norm: float = 1.0
    accountant: str = "rdp"
    dp_normalize: bool = True
    dp_center: bool = True
    dp_replay: int = 4
    secure_mode: bool = False
    device: str = "cpu"

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TaskSettings:
        """Read kebab-case keys (unknown keys are ignored: run configs hold server-only keys too)."""
        kw = {}
        for f in dataclasses.fields(cls):
            key = f.name.replace("_", "-")
            if key in record:
                kw[f.name] = type(f.default)(record[key])
        return cls(**kw)

    def to_record(self) -> dict[str, Any]:
        """Kebab-case dict of Flower-compatible values."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return {"width": self.width} if self.width else {}

    def privacy_config(self) -> Any:
        """The DP block of one release (one round's summary, at ``epsilon``), or None without DP."""
        if not self.epsilon:
            return None
        from fedcl.privacy.config import PrivacyConfig

        return PrivacyConfig(epsilon=self.epsilon, delta=self.delta, max_grad_norm=self.max_grad_norm,
                             accountant=self.accountant, normalize=self.dp_normalize, center=self.dp_center,
                             replay=self.dp_replay, secure_mode=self.secure_mode)


@functools.lru_cache(maxsize=4)
def load_data(dataset: str, root: str = "") -> ImageData:
    """The dataset (cached per process: simulation actors serve many clients)."""
    return load_dataset(dataset, root or None)


@functools.lru_cache(maxsize=8)
def _parts(dataset: str, root: str, scheme: str, num_partitions: int, seed: int, alpha: float,
           classes_per_client: int) -> tuple[torch.Tensor, ...]:
    data = load_data(dataset, root)
    parts = partition_indices(data.train_labels.numpy(), num_partitions, scheme, seed=seed, alpha=alpha,
                              classes_per_client=classes_per_client)
    return tuple(torch.from_numpy(p) for p in parts)


def client_seed(s: TaskSettings, partition_id: int, server_round: int = 1) -> int:
    """The seed of partition ``partition_id``'s work in ``server_round`` (distillation, FedAvg's local
    epochs, FedDM's perturbation). The ClientApp uses it, so in-process experiments that call it
    reproduce a Flower run's summaries."""
    return s.seed * 100_003 + partition_id * 1009 + server_round


def load_partition(s: TaskSettings, partition_id: int, num_partitions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images and labels of one client."""
    data = load_data(s.dataset, s.data_root)
    idx = _parts(s.dataset, s.data_root, s.partition, num_partitions, s.seed, s.alpha, s.classes_per_client)[partition_id]
    return data.train_images[idx], data.train_labels[idx]


def make_model(s: TaskSettings, data: ImageData, seed: int | None = None) -> nn.Module:
    """A fresh network for ``data`` (seeded when ``seed`` is given)."""
    if seed is not None:
        torch.manual_seed(seed)
    return create_model(s.model, data.image_shape, data.num_classes, **s.model_kwargs)


def perturbed_network_fn(global_model: nn.Module, rho: float, seed: int) -> Callable[[Sequence[int], int], nn.Module]:
    """FedDM: matching networks are the global model plus Gaussian noise of ``rho`` times each tensor's std."""
    gen = torch.Generator().manual_seed(seed)

    def fn(in_shape: Sequence[int], num_classes: int) -> nn.Module:
        net = copy.deepcopy(global_model)
        with torch.no_grad():
            for p in net.parameters():
                scale = float(p.std()) if p.numel() > 1 else 0.0
                p.add_(torch.randn(p.shape, generator=gen) * (rho * scale))
        return net

    return fn


def _groups(s: TaskSettings, labels: torch.Tensor, num_classes: int, private: bool) -> dict[int, list[int]]:
    """The classes a client summarises, grouped by their clipped ipc ``min(ipc, n_c)``."""
    counts = torch.bincount(labels, minlength=num_classes)
    groups: dict[int, list[int]] = {}
    for c in range(num_classes):
        n = int(counts[c])
        if n >= (max(1, s.dp_min_class_images) if private else 1):
            groups.setdefault(min(s.ipc, n), []).append(c)
    return groups


def _distillers(s: TaskSettings, groups: Mapping[int, list[int]], *, seed: int, private: bool,
                network_fn: Callable[[Sequence[int], int], nn.Module] | None) -> dict[int, Any]:
    lr_img = s.dp_lr_img if private else s.lr_img
    opts: dict[str, Any] = {"iterations": s.iterations, "batch_real": s.batch_real, "lr_img": lr_img} \
        if s.method in ("dm",) else {"iterations": s.iterations} if s.method in ("gm", "dsa") else {}
    return {k: create_distiller(s.method, model=s.model, model_kwargs=s.model_kwargs, device=s.device,
                                seed=seed + k, progress=False, network_fn=network_fn, **opts) for k in groups}


def plan_summary(s: TaskSettings, labels: torch.Tensor, num_classes: int, privacy: Any) -> list[Any]:
    """The DP release (:class:`~fedcl.privacy.accounting.DPParams`) each group of a client's summary
    would make, planned from its class counts alone: no image is read.

    Raises:
        PrivacyError: the privacy block cannot be met (e.g. an epsilon no noise reaches).
    """
    from fedcl.privacy.access import plan_release

    counts = torch.bincount(labels, minlength=num_classes)
    groups = _groups(s, labels, num_classes, private=True)
    distillers = _distillers(s, groups, seed=0, private=True, network_fn=None)
    return [plan_release(distillers[k], counts[classes].tolist(), k, privacy) for k, classes in sorted(groups.items())]


def check_budget(ledger: Any, releases: Sequence[Any], name: str = "summary") -> None:
    """Raise PrivacyError (from the ledger) if any of this round's ``releases`` would take the
    client over its budget. The groups hold disjoint classes (parallel composition), so each is
    checked on its own against the client's history. Records nothing."""
    for params in releases:
        ledger.check(params, name=name)


def distill_partition(s: TaskSettings, images: torch.Tensor, labels: torch.Tensor, data: ImageData, *,
                      seed: int, network_fn: Callable[[Sequence[int], int], nn.Module] | None = None,
                      privacy: Any = None, ledger: Any = None) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
    """Distill one client's data: ``min(ipc, n_c)`` images for each class ``c`` it holds.

    Under DP, classes with fewer than ``dp_min_class_images`` images are left out. The engine takes one
    ``ipc`` for all classes, so classes are grouped by their clipped ipc and each group is
    distilled on its own (the groups hold disjoint data, so under DP their epsilons compose
    in parallel: the client's epsilon is the largest group's).

    Under DP with a ``ledger`` (:class:`~fedcl.privacy.PrivacyLedger`), every group's release
    is planned and checked against the ledger before any group reads the data
    (:func:`plan_summary`, :func:`check_budget`): a release over the budget raises PrivacyError
    and nothing is distilled. Recording the spend is the caller's (the round costs its largest group).

    Returns:
        Images, labels, and one ``{"ipc", "classes", "seconds", "privacy"}`` dict per group.
    """
    private = privacy is not None
    groups = _groups(s, labels, data.num_classes, private)
    if private and ledger is not None:
        check_budget(ledger, plan_summary(s, labels, data.num_classes, privacy))
    distillers = _distillers(s, groups, seed=seed, private=private, network_fn=network_fn)
    xs, ys, info = [], [], []
    meta = {"dataset": data.name, "mean": list(data.mean), "std": list(data.std)}
    for k, classes in sorted(groups.items()):
        keep = torch.isin(labels, torch.tensor(classes))
        distiller = distillers[k]
        syn = distiller.distill(images[keep], labels[keep], k, num_classes=data.num_classes, privacy=privacy, meta=meta)
        xs.append(syn.images)
        ys.append(syn.labels)
        info.append({"ipc": k, "classes": classes, "seconds": distiller.stats.get("distill_seconds", 0.0),
                     "privacy": syn.meta.get("privacy")})
    if not xs:
        return torch.zeros(0, *data.image_shape), torch.zeros(0, dtype=torch.long), info
    return torch.cat(xs), torch.cat(ys), info


def standardize_images(images: torch.Tensor, std: float = 1.0) -> torch.Tensor:
    """Each image (row of ``images``, any shape after the first axis) shifted to mean 0 and scaled to
    (sample) standard deviation ``std`` over its own pixels (a constant image becomes all zeros)."""
    flat = images.flatten(1)
    return ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-12) * std).view_as(images)


def train_global(s: TaskSettings, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, data: ImageData,
                 *, epochs: int, seed: int, dsa: bool = True, lr: float = SERVER_LR) -> float:
    """Train ``model`` in place on ``images`` (standardised with ``server_standardize``; with DSA, the
    evaluation protocol, then ``server_noise``) at learning rate ``lr``; return test accuracy."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    aug = DSA(default_strategy(data.name)) if dsa else None
    noise = float(s.server_noise)
    decay_at = lr_decay_epoch(epochs)  # train_model's lr falls there, i.e. after this many of its minibatches:
    late = decay_at * -(-len(images) // SERVER_BATCH) if decay_at is not None else math.inf
    batches = itertools.count()

    def augment(xb: torch.Tensor) -> torch.Tensor:
        xb = aug.random(xb, gen) if aug else xb
        std = noise * (s.server_noise_decay if next(batches) >= late else 1.0)
        return xb + std * torch.randn(xb.shape, generator=gen).to(xb.device) if noise > 0 else xb

    if len(images):
        if s.server_standardize:
            images = standardize_images(images)
        train_model(model, images, labels, epochs=epochs, lr=lr, batch_size=SERVER_BATCH,
                    augment=augment if aug or noise > 0 else None, generator=gen, device=s.device)
    return accuracy(model, data.test_images, data.test_labels, device=s.device)


def train_local(s: TaskSettings, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, seed: int) -> float:
    """FedAvg local update: ``local_epochs`` of plain SGD (no lr decay); returns training accuracy."""
    gen = torch.Generator().manual_seed(seed)
    train_model(model, images, labels, epochs=s.local_epochs, lr=s.lr, batch_size=s.batch_size, lr_decay=False,
                generator=gen, device=s.device)
    return accuracy(model, images, labels, device=s.device)
