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

__all__ = ["TaskSettings", "client_seed", "distill_partition", "load_data", "load_partition", "make_model", "mean_softmax",
           "perturbed_network_fn", "standardize_images", "train_global", "train_local", "train_teachers"]

SERVER_BATCH = 256  # minibatch of the server's training on summaries (and of centralised training)


@dataclass
class TaskSettings:
    """Everything a client or the server needs to know about the task (kebab-case on the wire).

    Attributes:
        dataset, data_root: what to load (``data_root`` "" means ``$FEDCL_DATA`` / ``./data``).
        partition, alpha, classes_per_client, seed: the federated split (and every other seed).
        method, ipc, iterations, batch_real, lr_img, min_class_images: client distillation.
        dp_min_class_images: under DP, classes with fewer images are left out (instead of
            ``min_class_images``). Class sizes are public facts in fedcl's DP model (the
            mechanism divides by the expected batch of each class), and the noise of a class
            mean grows as its size shrinks: a few images give a pure-noise summary that would
            only pollute the server's union.
        dp_lr_img: ``dm`` image learning rate under DP (the private mechanism scales every
            embedding to norm ``max_grad_norm``, so its gradients are ~100x smaller; the
            privacy sweep's MNIST setting is 100).
        codec: summary codec (``float32``, ``float16``, ``uint8``).
        model, width: the network (``width`` 0 keeps the model's default).
        server_epochs: epochs the server trains on the union of summaries.
        server_noise: standard deviation (normalised pixel units) of Gaussian noise added to every
            summary image of each server minibatch, after DSA (0: none). DP summaries carry the
            mechanism's noise unevenly: a small data owner's images are mostly noise texture, which
            a model can learn as a cue for that owner's classes; noise on every image removes the
            cue. Server-side post-processing: no privacy cost.
        server_noise_decay: ``server_noise`` is multiplied by this when the server's learning rate falls
            tenfold (half-way through its epochs): 1 keeps it constant; below 1 the last epochs train
            on images closer to the clean ones the model is tested on, after the first half has
            taught it to ignore the summaries' noise texture. Post-processing: no privacy cost.
        server_select: if > 0, the server trains, per class, on the summaries of the clients whose
            images of that class are at most this many times as rough (mean squared difference of
            neighbouring pixels) as the smoothest client's (0: on all of them). Under DP roughness
            falls steeply with a client's class size, so this sets aside the small holders' mostly-noise
            summaries of a class that a larger holder also sent, and keeps a class's only sources.
            Post-processing of released images: no privacy cost.
        server_balance: the server weights each class's loss by the inverse of its number of summary
            images (:func:`balanced_class_weights`), so that every class counts alike. The union of
            summaries holds ``ipc`` images per class per holder: a class split among three small
            holders gets three times the images (and the prior) of a class one large holder has,
            while the test set is balanced.
        server_standardize: the server scales every summary image to mean 0 and standard deviation 1
            (over its pixels) before training. The matching ConvNet's instance norm makes ``dm``'s
            loss blind to an image's scale, so the scale a summary image ends at is a by-product of
            its optimisation: under DP it grows with the noise in its targets, and so shrinks as
            epsilon grows. ``server_noise`` is in absolute units, so without this its weight on each
            image follows that by-product (see experiments/results/federated.md, fourteenth session).
            Post-processing of released images: no privacy cost.
        server_teachers: if > 0, the server first trains this many models on the summaries (each
            from its own initialisation and training seed, with everything above), then trains the
            global model on the mean of their softmax outputs for each augmented batch instead of
            the labels: ensemble distillation (as FedDF, Lin et al. 2020, with the summaries as the
            transfer set), so that one model gets most of an ensemble's accuracy. Costs
            ``server_teachers + 1`` trainings on the server; post-processing of released images: no
            privacy cost.
        server_lr: the learning rate of the server's training on the summaries (SGD with momentum 0.9,
            divided by 10 half-way: the DC/DM evaluation protocol, whose 0.01 is the default). On the
            DP config's summaries 0.03 measured no gain (+0.07 points over fourteen seeds;
            experiments/results/federated.md, eighteenth session). Post-processing: no privacy cost.
        local_epochs, lr, batch_size: FedAvg local training (``lr`` also trains the centralised model).
        rho: FedDM perturbation of the global model (relative std of the noise).
        epsilon, delta: DP per client (epsilon 0 means no DP).
        max_grad_norm, accountant, secure_mode, dp_normalize, dp_center, dp_pool, dp_replay, dp_clamp,
            dp_downsample, dp_subspace, dp_subspace_below, dp_public, dp_public_fill, dp_schedule: the rest of
            the client's DP block (:class:`fedcl.privacy.PrivacyConfig`'s fields).
        device: ``auto``, ``cpu``, ``cuda``.
        fault: test hook, ``"PID:KIND,..."`` makes partition PID send a bad summary
            (KIND: ``nan``, ``shape``, ``labels``, ``oversize``, ``dtype``).
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
    min_class_images: int = 1
    codec: str = "float32"
    model: str = "convnet"
    width: int = 0
    server_epochs: int = 300
    server_noise: float = 0.0
    server_noise_decay: float = 1.0
    server_select: float = 0.0
    server_balance: bool = False
    server_standardize: bool = False
    server_teachers: int = 0
    server_lr: float = 0.01
    local_epochs: int = 1
    lr: float = 0.01
    batch_size: int = 64
    rho: float = 0.05
    epsilon: float = 0.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    accountant: str = "rdp"
    dp_normalize: bool = True
    dp_center: bool = True
    dp_pool: bool = False
    dp_replay: int = 4
    dp_clamp: bool = False
    dp_downsample: int = 1
    dp_subspace: int = 0
    dp_subspace_below: int = 0
    dp_public: str = ""
    dp_public_fill: float = 1.0
    dp_schedule: str = "constant"
    secure_mode: bool = False
    device: str = "cpu"
    fault: str = ""

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

    def privacy_config(self, rounds: int = 1) -> Any:
        """The client's DP block for one of ``rounds`` releases (``epsilon / rounds`` each), or None without DP."""
        if not self.epsilon:
            return None
        from fedcl.privacy.config import PrivacyConfig

        return PrivacyConfig(epsilon=self.epsilon / max(rounds, 1), delta=self.delta, max_grad_norm=self.max_grad_norm,
                             accountant=self.accountant, normalize=self.dp_normalize, center=self.dp_center,
                             pool=self.dp_pool, replay=self.dp_replay, clamp=self.dp_clamp,
                             downsample=self.dp_downsample, subspace=self.dp_subspace,
                             subspace_below=self.dp_subspace_below, public=self.dp_public,
                             public_fill=self.dp_public_fill, schedule=self.dp_schedule,
                             secure_mode=self.secure_mode)

    def faults(self) -> dict[int, str]:
        """``fault`` parsed as ``{partition_id: kind}``."""
        out = {}
        for item in filter(None, (s.strip() for s in self.fault.split(","))):
            pid, _, kind = item.partition(":")
            out[int(pid)] = kind
        return out


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


def distill_partition(s: TaskSettings, images: torch.Tensor, labels: torch.Tensor, data: ImageData, *,
                      seed: int, network_fn: Callable[[Sequence[int], int], nn.Module] | None = None,
                      privacy: Any = None, ledger: Any = None) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
    """Distill one client's data: ``min(ipc, n_c)`` images for each class ``c`` it holds.

    Classes with fewer than ``min_class_images`` images (``dp_min_class_images`` under DP)
    are left out. The engine takes one
    ``ipc`` for all classes, so classes are grouped by their clipped ipc and each group is
    distilled on its own (the groups hold disjoint data, so under DP their epsilons compose
    in parallel: the client's epsilon is the largest group's).

    Under DP with a ``ledger`` (:class:`~fedcl.privacy.PrivacyLedger`), every group's release
    is planned and checked against the ledger before any group reads the data: a release
    over the budget raises PrivacyError and nothing is distilled. Recording the spend is
    the caller's (the round costs its largest group).

    Returns:
        Images, labels, and one ``{"ipc", "classes", "seconds", "privacy"}`` dict per group.
    """
    counts = torch.bincount(labels, minlength=data.num_classes)
    groups: dict[int, list[int]] = {}
    min_images = s.dp_min_class_images if privacy is not None else s.min_class_images
    for c in range(data.num_classes):
        n = int(counts[c])
        if n >= max(1, min_images):
            groups.setdefault(min(s.ipc, n), []).append(c)
    xs, ys, info = [], [], []
    meta = {"dataset": data.name, "mean": list(data.mean), "std": list(data.std)}
    lr_img = s.dp_lr_img if privacy is not None else s.lr_img
    opts: dict[str, Any] = {"iterations": s.iterations, "batch_real": s.batch_real, "lr_img": lr_img} \
        if s.method in ("dm",) else {"iterations": s.iterations} if s.method in ("gm", "dsa") else {}
    distillers = {k: create_distiller(s.method, model=s.model, model_kwargs=s.model_kwargs, device=s.device,
                                      seed=seed + k, progress=False, network_fn=network_fn, **opts) for k in groups}
    if privacy is not None and ledger is not None:
        from fedcl.privacy.access import plan_release

        for k, classes in groups.items():
            ledger.check(plan_release(distillers[k], counts[classes].tolist(), k, privacy), name=f"ipc-{k} summary")
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


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Cross-entropy weights that give every class present the same total weight (absent classes 0).

    ``weight[c] = n / (k * n_c)`` for the ``k`` classes with ``n_c > 0`` images among ``n``:
    on a balanced set every weight is 1.
    """
    counts = torch.bincount(labels.long(), minlength=num_classes).double()
    present = counts > 0
    weight = torch.zeros(num_classes, dtype=torch.float64)
    weight[present] = counts.sum() / (present.sum() * counts[present])
    return weight.float()


def train_global(s: TaskSettings, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, data: ImageData,
                 *, epochs: int, seed: int, dsa: bool = True,
                 teacher: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    """Train ``model`` in place on ``images`` (standardised with ``server_standardize``; with DSA, the
    evaluation protocol, then ``server_noise``); return test accuracy.

    ``teacher``: class probabilities for each augmented batch, the targets instead of ``labels``
    (``fedcl.train.train_model``). Without one, ``server_teachers`` > 0 makes it the mean softmax of
    that many models trained here first (:func:`train_teachers`, :func:`mean_softmax`).
    """
    if teacher is None and s.server_teachers > 0 and len(images):
        teacher = mean_softmax(train_teachers(s, images, labels, data, epochs=epochs, seed=seed, dsa=dsa))
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
        weight = balanced_class_weights(labels, data.num_classes) if s.server_balance else None
        train_model(model, images, labels, epochs=epochs, lr=s.server_lr, batch_size=SERVER_BATCH,
                    augment=augment if aug or noise > 0 else None, generator=gen, device=s.device,
                    class_weight=weight, teacher=teacher)
    return accuracy(model, data.test_images, data.test_labels, device=s.device)


def train_teachers(s: TaskSettings, images: torch.Tensor, labels: torch.Tensor, data: ImageData, *, epochs: int,
                   seed: int, dsa: bool = True) -> list[nn.Module]:
    """``s.server_teachers`` fresh models, the ``j``-th (from 1) initialised and trained by
    :func:`train_global` (without teachers) with seed ``seed + 1000 j``; in eval mode."""
    plain = dataclasses.replace(s, server_teachers=0)
    teachers = []
    for j in range(1, s.server_teachers + 1):
        net = make_model(s, data, seed=seed + 1000 * j)
        train_global(plain, net, images, labels, data, epochs=epochs, seed=seed + 1000 * j, dsa=dsa)
        teachers.append(net.eval())
    return teachers


def mean_softmax(models: Sequence[nn.Module]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A batch's class probabilities averaged over ``models`` (an ensemble, as a distillation target)."""

    def fn(xb: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.softmax(m(xb), 1) for m in models]).mean(0)

    return fn


def train_local(s: TaskSettings, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, seed: int) -> float:
    """FedAvg local update: ``local_epochs`` of plain SGD (no lr decay); returns training accuracy."""
    gen = torch.Generator().manual_seed(seed)
    train_model(model, images, labels, epochs=s.local_epochs, lr=s.lr, batch_size=s.batch_size, lr_decay=False,
                generator=gen, device=s.device)
    return accuracy(model, images, labels, device=s.device)
