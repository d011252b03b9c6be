"""The Distiller interface every engine implements, and its registry."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from fedcl.distill.access import PrivacyPolicy, RealAccess
from fedcl.distill.memory import Memory, create_memory, list_memories, memory_class
from fedcl.distill.synthetic import SyntheticSet
from fedcl.errors import ConfigError
from fedcl.models import create_model
from fedcl.registry import Registry
from fedcl.utils import resolve_device

__all__ = ["DISTILLERS", "ClassData", "Distiller", "create_distiller", "list_distillers", "register_distiller",
           "sample_rate"]

DISTILLERS: Registry[Distiller] = Registry("distillation method")

Callback = Callable[[int, SyntheticSet], None]


def register_distiller(name: str) -> Callable[[type[Distiller]], type[Distiller]]:
    """Class decorator registering a :class:`Distiller` subclass under ``name``."""

    def deco(cls: type[Distiller]) -> type[Distiller]:
        cls.name = name
        DISTILLERS.register(name)(cls)
        return cls

    return deco


def list_distillers() -> list[str]:
    """Names of every registered engine."""
    return DISTILLERS.names()


def create_distiller(name: str, **cfg: Any) -> Distiller:
    """Build an engine by name: ``create_distiller("dm", iterations=2000, device="cuda")``.

    ``None`` values are dropped so that each engine's defaults survive; an unknown
    keyword raises a ConfigError that lists the engine's valid ones.
    """
    cls = DISTILLERS.get(name)
    try:
        return DISTILLERS.create(name, **cfg)
    except TypeError as exc:
        import inspect

        valid: set[str] = set()
        for klass in cls.__mro__:
            if "__init__" in vars(klass):
                valid |= {n for n, p in inspect.signature(klass.__init__).parameters.items()
                          if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        raise ConfigError(f"bad option for method {name!r}: {exc}; valid options: {', '.join(sorted(valid))}") from None


def sample_rate(batch_per_class: int, class_counts: Sequence[int]) -> float:
    """Poisson rate that samples ``batch_per_class`` images per class in expectation: ``batch * K / N``
    over the non-empty classes (K of them, N examples), capped at 1."""
    counts = [int(c) for c in class_counts if int(c) > 0]
    return min(1.0, int(batch_per_class) * len(counts) / max(sum(counts), 1))


class ClassData:
    """Real images grouped by class on one device, for fast per-class sampling.

    Args:
        images: ``(N, C, H, W)`` tensor.
        labels: ``(N,)`` int64 tensor.
        num_classes: number of classes.
        device: where to keep the data (once, for the whole run).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, device: torch.device) -> None:
        order = torch.argsort(labels.cpu(), stable=True)
        self.images = images.cpu()[order].to(device)
        self.labels = labels.cpu()[order].to(device)
        self.counts = torch.bincount(labels.cpu(), minlength=num_classes)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), self.counts.cumsum(0)[:-1]])
        self.num_classes = num_classes
        self.device = device

    def indices(self, c: int) -> torch.Tensor:
        """Indices (into ``self.images``) of class ``c``."""
        start = int(self.offsets[c])
        return torch.arange(start, start + int(self.counts[c]))

    def sample(self, n: int, generator: torch.Generator | None = None,
               classes: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to ``n`` images of each class, without replacement, concatenated class by class."""
        parts = []
        for c in classes if classes is not None else range(self.num_classes):
            k = int(self.counts[c])
            parts.append(torch.randperm(k, generator=generator)[: min(n, k)] + int(self.offsets[c]))
        idx = torch.cat(parts).to(self.device)
        return self.images[idx], self.labels[idx]


class Distiller(ABC):
    """Turns a labelled image set into a small synthetic set.

    Subclasses implement :meth:`_distill`; the base class validates the input, keeps the
    real data on the device, builds the initial synthetic set and the metadata, and hands
    the engine its :class:`~fedcl.distill.access.RealAccess`, the only door to real data
    (exact, or private when a privacy block is enabled).

    Args:
        model: registry name of the network used for matching.
        model_kwargs: options for :func:`fedcl.models.create_model`.
        init: ``real`` (random real images of each class) or ``noise``; None (default) picks
            ``real``, and ``noise`` under DP (a DP release never starts from real images).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1`` ...
        seed: drives every random choice of the run.
        progress: show a progress bar on a terminal.
        network_fn: optional ``fn(in_shape, num_classes) -> nn.Module`` that supplies the
            matching networks instead of fresh registry models (e.g. FedDM matches in the
            feature space of the current global model, randomly perturbed).
        param: how the memory is stored (:mod:`fedcl.distill.memory`): ``images`` (free pixels,
            default), ``idc`` (multi-formation) or ``haba`` (bases and hallucinators). ``ipc``
            is then a storage budget; the engine matches the decoded images.
        param_kwargs: options of the parameterisation (``factor`` for idc; ``hallucinators``,
            ``hidden`` for haba).
        soft_labels: learn soft labels: one distribution over the classes per decoded image,
            initialised from the logits of a network trained on the real data for
            ``soft_label_steps`` steps (as TESLA and DATM do), optimised with the images where the
            engine's loss depends on the labels (gm, dsa; dm's loss does not, so its labels stay
            at that initialisation), stored and counted in the memory, used by the evaluation
            (soft cross-entropy).
        lr_label: SGD learning rate of the soft labels' logits.
        soft_label_steps: training steps (batches of ``batch_real`` images per class) of the
            network whose logits initialise the soft labels.
    """

    name: ClassVar[str] = ""
    #: whether the engine reads real data after initialisation (and so can be made DP)
    supports_privacy: ClassVar[bool] = False
    #: whether the engine optimises a memory (selection engines return real images instead)
    synthesises: ClassVar[bool] = True
    #: real images per class that the exact access draws at each step
    batch_real: int = 256

    def __init__(self, *, model: str = "convnet", model_kwargs: dict[str, Any] | None = None, init: str | None = None,
                 device: str | torch.device = "auto", seed: int = 0, progress: bool = True,
                 network_fn: Callable[[Sequence[int], int], nn.Module] | None = None, param: str = "images",
                 param_kwargs: dict[str, Any] | None = None, soft_labels: bool = False, lr_label: float = 1.0,
                 soft_label_steps: int = 100) -> None:
        if init not in (None, "real", "noise"):
            raise ConfigError(f"init must be 'real' or 'noise' (or unset), got {init!r}")
        memory = memory_class(param)  # an unknown name fails here, listing the valid ones
        if not self.synthesises and (not memory.holds_selections or soft_labels):
            holders = [n for n in list_memories() if memory_class(n).holds_selections]
            raise ConfigError(f"method {self.name!r} selects real images: it stores them as param "
                              f"{' or '.join(holders)} (not {param!r}) and learns no soft_labels; use a matching "
                              f"engine (dm, gm, dsa, ...) for those")
        self.param, self.param_kwargs = param, dict(param_kwargs or {})
        self.soft_labels, self.lr_label, self.soft_label_steps = bool(soft_labels), float(lr_label), int(soft_label_steps)
        self.model = model
        self.model_kwargs = dict(model_kwargs or {})
        self.init = init
        self.device = resolve_device(device)
        self.seed = int(seed)
        self.progress = progress
        self.network_fn = network_fn
        self.iterations = 0
        self.stats: dict[str, float] = {}

    def make_network(self, in_shape: Sequence[int], num_classes: int) -> nn.Module:
        """A freshly initialised matching network on the engine's device (or ``network_fn``'s)."""
        if self.network_fn is not None:
            return self.network_fn(in_shape, num_classes).to(self.device)
        return create_model(self.model, in_shape, num_classes, **self.model_kwargs).to(self.device)

    def release_steps(self, ipc: int) -> int:
        """How many times a run reads each class through its access (DP: the mechanism's steps)."""
        return int(self.iterations)

    def release_plan(self, class_counts: Sequence[int], ipc: int) -> tuple[float, int]:
        """``(sample_rate, steps)`` of a private release on classes of these sizes (no data read).

        The default samples ``batch_real`` images per class in expectation: the rate
        ``batch_real * K / N`` (K classes, N examples; capped at 1), the same for every class, over
        :meth:`release_steps` steps. An engine that reads real data on another schedule (``mtt``'s
        DP-SGD experts) overrides it.
        """
        return sample_rate(self.batch_real, class_counts), self.release_steps(ipc)

    @property
    def release_seed(self) -> int:
        """Seed of a private release's sampling and noise (the run's seed; ``mtt``: its experts')."""
        return self.seed

    def privacy_record(self, access: RealAccess) -> dict[str, Any] | None:
        """The privacy record of the release this run returns: what its access spent (None: not private)."""
        return access.record()

    def distill(self, images: torch.Tensor, labels: torch.Tensor, ipc: int, *, num_classes: int | None = None,
                privacy: PrivacyPolicy | None = None, callback: Callback | None = None,
                meta: dict[str, Any] | None = None) -> SyntheticSet:
        """Distill ``images``/``labels`` into ``ipc`` images per class.

        Args:
            images: real images ``(N, C, H, W)``, normalised.
            labels: int64 labels ``(N,)``.
            ipc: images per class in the result.
            num_classes: defaults to ``labels.max() + 1``.
            privacy: a DP block (:class:`fedcl.privacy.PrivacyConfig`); None or a disabled block
                means no DP.
            callback: called as ``callback(iteration, synthetic_so_far)`` by iterative engines.
            meta: extra metadata (``dataset``, ``mean``, ``std`` ...) copied into the result.

        Returns:
            A :class:`SyntheticSet` with ``ipc`` images of every class present.

        Raises:
            ConfigError: ``ipc`` < 1, more than a class has, privacy asked of an engine
                that cannot provide it, or ``init="real"`` under DP.
            PrivacyError: an invalid privacy block (raised before any image is read).
        """
        if images.ndim != 4 or labels.shape != (images.shape[0],):
            raise ConfigError(f"expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}")
        num_classes = int(num_classes if num_classes is not None else int(labels.max()) + 1)
        ipc = int(ipc)
        counts = torch.bincount(labels.cpu(), minlength=num_classes)
        present = [c for c in range(num_classes) if counts[c] > 0]
        if ipc < 1:
            raise ConfigError(f"ipc must be at least 1, got {ipc}")
        smallest = min(int(counts[c]) for c in present)
        if ipc > smallest:
            raise ConfigError(f"ipc={ipc} is more than the smallest class has ({smallest} images); use ipc <= {smallest}")
        private = privacy is not None and privacy.enabled
        if private and not self.supports_privacy:
            raise ConfigError(f"method {self.name!r} cannot be made differentially private: it selects real images; "
                              f"use a matching engine (gm, dsa, dm) with privacy")
        if private and self.init == "real":
            raise ConfigError("init='real' would copy real images into a DP release; leave init unset (DP starts "
                              "from noise) or set init='noise'")
        if private and self.soft_labels:
            raise ConfigError("soft_labels under DP is not available: their initialisation trains a network on the "
                              "real data outside the private mechanism; use hard labels with privacy")
        init = self.init or ("noise" if private else "real")
        gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        real = ClassData(images, labels, num_classes, self.device)
        memory = create_memory(self.param, present, ipc, tuple(images.shape[1:]), **self.param_kwargs)
        # the private access validates and calibrates from public facts (class sizes, decoded images per
        # class) before any image is read
        access = (privacy.open_access(self, real, present, memory.per_class, gen) if private
                  else RealAccess(real, present, self.batch_real, gen))
        # a memory that decodes more images than it stores (idc) starts each from its own real image
        n_init = max(ipc, min(memory.init_per_class, smallest))
        memory.init_from_images(self.initial_images(real, present, n_init, gen, init))
        self._meta = {**(meta or {}), "method": self.name, "ipc": ipc, "image_shape": list(images.shape[1:]),
                      "seed": self.seed, "model": self.model, "init": init}
        t0 = time.perf_counter()
        if self.soft_labels:
            memory.enable_soft_labels(self.label_logits(access, memory))
            self.stats["label_seconds"] = time.perf_counter() - t0
        self._distill(access, memory, present, gen, callback)
        self.stats["distill_seconds"] = time.perf_counter() - t0
        if self.iterations:  # the soft labels' initialisation is counted in distill_seconds, not per iteration
            iterating = self.stats["distill_seconds"] - self.stats.get("label_seconds", 0.0)
            self.stats["seconds_per_iteration"] = iterating / self.iterations
        return self.wrap(memory, num_classes, privacy_meta=self.privacy_record(access))

    def label_logits(self, access: RealAccess, memory: Memory) -> torch.Tensor:
        """Logits of a network trained on the real data (through ``access``) on the decoded images."""
        num_classes = access.real.num_classes
        net = self.make_network(memory.image_shape, num_classes)
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
        net.train()
        for _ in range(self.soft_label_steps):
            access.step()
            grads = access.mean_gradient(access.batch(), net, params)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            opt.step()
        net.eval()
        with torch.no_grad():
            return net(memory())

    def param_groups(self, memory: Memory, lr_img: float) -> list[dict[str, Any]]:
        """Optimiser groups: the memory's stored images at ``lr_img``, soft-label logits at ``lr_label``."""
        groups: list[dict[str, Any]] = [{"params": memory.image_parameters(), "lr": lr_img}]
        if memory.label_logits is not None:
            groups.append({"params": [memory.label_logits], "lr": self.lr_label})
        return groups

    def optimizer(self, memory: Memory, lr_img: float, momentum: float) -> torch.optim.Optimizer:
        """SGD (with ``momentum``) over :meth:`param_groups`."""
        return torch.optim.SGD(self.param_groups(memory, lr_img), lr=lr_img, momentum=momentum)

    def wrap(self, memory: Memory, num_classes: int, privacy_meta: Any = None) -> SyntheticSet:
        """A SyntheticSet of ``memory`` (decoded, with its stored form) and this run's metadata."""
        from fedcl import __version__

        meta = {**self._meta, "iterations": self.iterations, "fedcl_version": __version__, "privacy": privacy_meta}
        return SyntheticSet.from_memory(memory, num_classes, meta)

    def initial_images(self, real: ClassData, classes: list[int], ipc: int, gen: torch.Generator,
                       init: str = "real") -> torch.Tensor:
        """``ipc`` random real images per class, or Gaussian noise (``init="noise"``)."""
        if init == "noise":
            shape = (len(classes) * ipc, *real.images.shape[1:])
            return torch.randn(shape, generator=gen).to(self.device)
        x, _ = real.sample(ipc, gen, classes)
        return x.clone()

    @abstractmethod
    def _distill(self, access: RealAccess, memory: Memory, classes: list[int], gen: torch.Generator,
                 callback: Callback | None) -> None:
        """Optimise ``memory`` in place (its decoded images: ``memory()``, class-major; labels:
        ``memory.labels()``).

        Every read of real data after the memory's initialisation goes through ``access``.
        """
