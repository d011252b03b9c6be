"""The federated task, free of Flower: partitions, models, client distillation, training.

``client_app.py`` and ``server_app.py`` stay thin: they translate Flower messages to the
calls below. Every call takes the run's settings, a
:class:`~fedcl.federated.config.FederatedConfig` (read from the run config on both sides).
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from fedcl.data import ImageData, load_dataset
from fedcl.data.partition import partition_indices
from fedcl.distill import create_distiller
from fedcl.distill.augment import DSA, default_strategy
from fedcl.errors import ConfigError, DataError
from fedcl.federated.config import FederatedConfig
from fedcl.models import create_model
from fedcl.train import accuracy, lr_decay_epoch, train_model

__all__ = ["SERVER_BATCH", "SERVER_LR", "check_budget", "client_seed", "distill_partition", "load_data",
           "load_node_data", "load_partition", "make_model", "run_data", "server_data", "perturbed_network_fn", "plan_summary", "train_global",
           "train_local"]

SERVER_BATCH = 256  # minibatch of the server's training on summaries (and of centralised training)
SERVER_LR = 0.01  # the server's SGD learning rate on summaries: the DC/DM evaluation protocol's (0.03 measured
# no gain over fourteen seeds of the DP config: experiments/results/federated.md, eighteenth session)


@functools.lru_cache(maxsize=4)
def load_data(dataset: str, root: str = "", image_size: int = 0, val_fraction: float = 0.0) -> ImageData:
    """The dataset (cached per process: simulation actors serve many clients); ``image_size`` 0 keeps the size;
    ``val_fraction`` > 0 holds a validation split out of the training images."""
    return load_dataset(dataset, root or None, image_size=image_size or None, val_fraction=val_fraction)


def run_data(s: FederatedConfig) -> ImageData:
    """The dataset of a simulated run: its training images (without ``data.val_fraction``'s validation
    split) are what the clients partition; its test images are ``data.eval_split`` (the test set, or the
    validation split)."""
    data = load_data(s.dataset, s.data.root, s.data.image_size, s.data.val_fraction)
    return data.for_evaluation(s.data.eval_split)


def server_data(s: FederatedConfig) -> ImageData:
    """The server's dataset: its ``data.root`` (evaluation set and label space, :func:`run_data`), or with
    ``data.server_test=false`` an empty stand-in of ``data.classes`` and ``channels x image_size x image_size``."""
    if s.data.server_test:
        return run_data(s)
    c, n = s.data.channels, s.data.image_size
    return ImageData(name=s.dataset, train_images=torch.zeros(0, c, n, n), train_labels=torch.zeros(0, dtype=torch.long),
                     test_images=torch.zeros(0, c, n, n), test_labels=torch.zeros(0, dtype=torch.long),
                     num_classes=len(s.data.classes), mean=(0.0,) * c, std=(1.0,) * c, class_names=list(s.data.classes))


def _channels(data: ImageData, channels: int, path: str) -> ImageData:
    """``data`` with ``channels`` channels (0: as it is): grey repeated to RGB; colour into grey refused."""
    have = data.image_shape[0]
    if not channels or have == channels:
        return data
    if have == 1 and channels == 3:
        return replace(data, train_images=data.train_images.repeat(1, 3, 1, 1),
                       test_images=data.test_images.repeat(1, 3, 1, 1), mean=data.mean * 3, std=data.std * 3)
    raise DataError(f"node config data-path={path}: images have {have} channels, the run's data.channels is {channels}")


@functools.lru_cache(maxsize=2)
def _node_data(dataset: str, path: str, image_size: int, classes: tuple[str, ...], channels: int = 0) -> ImageData:
    return _channels(_read_node_data(dataset, path, image_size, classes), channels, path)


def _read_node_data(dataset: str, path: str, image_size: int, classes: tuple[str, ...]) -> ImageData:
    from pathlib import Path

    from fedcl.data.imagefolder import load_image_folder

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"node config data-path={path}: no such folder on this node")
    if dataset != "imagefolder":  # a torchvision root: the whole training split is this node's
        data = load_dataset(dataset, folder, image_size=image_size or None)
        return replace(data, test_images=data.test_images[:0], test_labels=data.test_labels[:0])
    if not classes:
        raise ConfigError("the run config names no data.classes: nodes reading their own image folders "
                          "(node config data-path) need the run's label space, e.g. data.classes='cat,dog'")
    data = load_image_folder(folder, image_size or None, require_test=False)
    unknown = sorted(set(data.class_names) - set(classes))
    if unknown:
        raise DataError(f"node config data-path={path}: class folders {', '.join(unknown)} are not in the run's "
                        f"label space data.classes={','.join(classes)}")
    to_run = torch.tensor([classes.index(c) for c in data.class_names], dtype=torch.int64)
    return replace(data, train_labels=to_run[data.train_labels], test_images=data.train_images[:0],
                   test_labels=data.train_labels[:0], num_classes=len(classes), class_names=list(classes))


def load_node_data(s: FederatedConfig, path: str) -> ImageData:
    """A SuperNode's own training data, from its node config ``data-path`` (never from the run config).

    ``dataset=imagefolder``: ``path/train/<class>/*`` (``path/test/`` is optional and unused), classes
    any of ``data.classes``, labels in their order; another dataset: a torchvision root holding it,
    all of its training split. Images are resized to ``data.image_size`` when set, given
    ``data.channels`` when set (grey to RGB; colour into grey is refused); the server checks
    the shape of every summary against its own data.

    Raises:
        DataError: no such folder, a bad layout, a class outside ``data.classes``.
        ConfigError: ``dataset=imagefolder`` without ``data.classes``.
    """
    return _node_data(s.dataset, path, s.data.image_size, tuple(s.data.classes), s.data.channels)


@functools.lru_cache(maxsize=8)
def _parts(dataset: str, root: str, image_size: int, val_fraction: float, scheme: str, num_partitions: int, seed: int,
           alpha: float, classes_per_client: int) -> tuple[torch.Tensor, ...]:
    data = load_data(dataset, root, image_size, val_fraction)  # the call run_data makes: one cached load
    parts = partition_indices(data.train_labels.numpy(), num_partitions, scheme, seed=seed, alpha=alpha,
                              classes_per_client=classes_per_client)
    return tuple(torch.from_numpy(p) for p in parts)


def client_seed(s: FederatedConfig, partition_id: int, server_round: int = 1) -> int:
    """The seed of partition ``partition_id``'s work in ``server_round`` (distillation, FedAvg's local
    epochs, FedDM's perturbation). The ClientApp uses it, so in-process experiments that call it
    reproduce a Flower run's summaries."""
    return s.seed * 100_003 + partition_id * 1009 + server_round


def load_partition(s: FederatedConfig, partition_id: int, num_partitions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images and labels of one client."""
    data = run_data(s)
    idx = _parts(s.dataset, s.data.root, s.data.image_size, s.data.val_fraction, s.partition, num_partitions, s.seed,
                 s.alpha, s.classes_per_client)[partition_id]
    return data.train_images[idx], data.train_labels[idx]


def make_model(s: FederatedConfig, data: ImageData, seed: int | None = None) -> nn.Module:
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


def _groups(s: FederatedConfig, labels: torch.Tensor, num_classes: int, private: bool) -> dict[int, list[int]]:
    """The classes a client summarises, grouped by their clipped ipc ``min(ipc, n_c)``."""
    counts = torch.bincount(labels, minlength=num_classes)
    groups: dict[int, list[int]] = {}
    for c in range(num_classes):
        n = int(counts[c])
        if n >= (max(1, s.dp_min_class_images) if private else 1):
            groups.setdefault(min(s.ipc, n), []).append(c)
    return groups


def _distillers(s: FederatedConfig, groups: Mapping[int, list[int]], *, seed: int, private: bool,
                network_fn: Callable[[Sequence[int], int], nn.Module] | None) -> dict[int, Any]:
    lr_img = s.dp_lr_img if private else s.lr_img
    opts: dict[str, Any] = {"iterations": s.iterations, "batch_real": s.batch_real, "lr_img": lr_img} \
        if s.method in ("dm",) else {"iterations": s.iterations} if s.method in ("gm", "dsa") else {}
    if s.param != "images" or s.soft_labels:  # the default keeps the engines' own default (plain images)
        opts.update(param=s.param, param_kwargs=dict(s.param_kwargs), soft_labels=s.soft_labels)
    return {k: create_distiller(s.method, model=s.model, model_kwargs=s.model_kwargs, device=s.device,
                                seed=seed + k, progress=False, network_fn=network_fn, **opts) for k in groups}


def plan_summary(s: FederatedConfig, labels: torch.Tensor, num_classes: int, privacy: Any) -> list[Any]:
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


def distill_partition(s: FederatedConfig, images: torch.Tensor, labels: torch.Tensor, data: ImageData, *,
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
        Decoded images, labels (soft with ``soft_labels``), and one ``{"ipc", "classes", "seconds",
        "privacy", "set"}`` dict per group (``set``: its SyntheticSet, whose ``memory`` is what is stored).
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
                     "privacy": syn.meta.get("privacy"), "set": syn})
    if not xs:
        return torch.zeros(0, *data.image_shape), torch.zeros(0, dtype=torch.long), info
    return torch.cat(xs), torch.cat(ys), info


def train_global(s: FederatedConfig, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, data: ImageData,
                 *, epochs: int, seed: int, dsa: bool = True, lr: float = SERVER_LR) -> float:
    """Train ``model`` in place on ``images`` (with DSA, the evaluation protocol, then ``server_noise``) at
    learning rate ``lr``; return test accuracy."""
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
        train_model(model, images, labels, epochs=epochs, lr=lr, batch_size=SERVER_BATCH,
                    augment=augment if aug or noise > 0 else None, generator=gen, device=s.device)
    return accuracy(model, data.test_images, data.test_labels, device=s.device)


def train_local(s: FederatedConfig, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, seed: int) -> float:
    """FedAvg local update: ``local_epochs`` of plain SGD (no lr decay); returns training accuracy."""
    gen = torch.Generator().manual_seed(seed)
    train_model(model, images, labels, epochs=s.local_epochs, lr=s.lr, batch_size=s.batch_size, lr_decay=False,
                generator=gen, device=s.device)
    return accuracy(model, images, labels, device=s.device)
