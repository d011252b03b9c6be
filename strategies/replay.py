"""Distilled replay for Avalanche: a storage policy and a strategy.

:class:`DistilledBuffer` is an Avalanche ``ExemplarsBuffer``: after each experience it
distills that experience's data, class by class, with a fedcl engine (``dm`` by default)
into its share of a fixed memory. It plugs into the stock
``ReplayPlugin(mem_size=M, storage_policy=DistilledBuffer(M))`` and so into any strategy
that takes plugins. :class:`DistilledReplay` wraps that the way Avalanche's ``Replay``
wraps ``ReplayPlugin``, with a GDumb-style option.

Share rule (class-balanced, never above ``max_size``), as Avalanche's ``ClassBalancedBuffer``:
with ``adaptive_size=True`` (the default) and ``n`` classes seen so far, every class gets
``max_size // n`` images' worth; the remainder goes, one each, to the classes of the current
experience (they are being distilled now, so they can take any size). With
``adaptive_size=False`` every class gets ``max_size // num_classes`` from its first experience
on: the memory is not full until the last class arrives, but a class is distilled once, at
the size it keeps, and never shrinks. Older classes of an adaptive memory shrink to their
new share by ``shrink="subsample"`` (keep the first stored images of the class; they start
from a random sample of real images, so a prefix is an unbiased subset) or
``shrink="redistill"`` (distill the class's current decoded images into the smaller share
with the same engine; it reads no real data, so under DP it is post-processing and costs no
privacy). A selection engine (``random``, ``herding``,
``kcenter``) always subsamples: its memory is a selection of real images in the engine's
order (random, or greedy herding / k-center), so a prefix is that engine's smaller selection.

Memories (``distiller_kwargs`` ``param``, ``param_kwargs``, ``soft_labels``): each class is kept
as a one-class :class:`~fedcl.distill.memory.Memory` (:mod:`strategies.class_memory`), and
``max_size`` is a storage budget: a class's share of ``k`` images' worth stores ``k`` images'
worth of numbers and decodes to more images (``idc`` with factor 2: ``4 k``; ``haba``: its
bases times its hallucinators). Learners train on the decoded images: the GDumb-style learner
(:class:`DistilledGDumbPlugin`) on the learned soft labels, the stock ``ReplayPlugin`` on hard
labels (the most likely class of each soft label), since Avalanche datasets hold int targets.

Privacy: with an enabled :class:`~fedcl.privacy.config.PrivacyConfig`, each experience's
distillation is one DP release (``privacy.epsilon`` is its target). All releases go to ONE
:class:`~fedcl.privacy.ledger.PrivacyLedger` for the stream's owner, each with the records it
read: the experience dataset's ``record_ids`` data attribute (fedcl benchmarks set it: the
indices of the source training images), or, without it, all of the owner's data. The
ledger composes releases on the same records sequentially and on disjoint records in
parallel, so a split stream costs the largest release and a permuted stream (the same
images in every experience) the composition of all of them. ``privacy.budget`` caps that
total: the release that would exceed it is refused with a PrivacyError, planned from the
experience's class counts before any of its images is read.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import torch
from avalanche.training.plugins import ReplayPlugin, SupervisedPlugin
from avalanche.training.storage_policy import ExemplarsBuffer
from avalanche.training.templates import SupervisedTemplate
from torch.utils.data import DataLoader

from fedcl.continual.benchmarks import RECORD_IDS, tensor_dataset
from fedcl.distill import create_distiller, list_distillers
from fedcl.distill.memory import Memory, create_memory
from fedcl.errors import ConfigError
from fedcl.privacy.config import PrivacyConfig
from fedcl.privacy.ledger import PrivacyLedger, Records
from strategies.class_memory import cut, decode, memories_from_state, memories_state, with_soft_labels

__all__ = ["DistilledBuffer", "DistilledGDumbPlugin", "DistilledReplay", "class_shares"]

SHRINK_RULES = ("subsample", "redistill")


def class_shares(max_size: int, seen: list[int], new: list[int]) -> dict[int, int]:
    """Images per class: ``max_size // len(seen)`` each, the remainder one each to ``new`` classes.

    Args:
        max_size: the memory budget.
        seen: every class seen so far (old and new).
        new: the classes of the current experience (a subset of ``seen``).

    Returns:
        ``{class: share}``; shares differ by at most one and sum to at most ``max_size``.
    """
    base, rem = divmod(max_size, len(seen))
    shares = dict.fromkeys(seen, base)
    for c in sorted(new)[:rem]:
        shares[c] += 1
    return shares


def _collect(dataset: Any, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An Avalanche experience dataset as ``(x, y, task)`` tensors (eval transforms, no shuffling)."""
    data = dataset.eval() if hasattr(dataset, "eval") else dataset
    xs, ys, ts = [], [], []
    for batch in DataLoader(data, batch_size=batch_size, shuffle=False):
        xs.append(batch[0])
        ys.append(batch[1])
        ts.append(batch[-1] if len(batch) >= 3 else torch.zeros_like(batch[1]))
    return torch.cat(xs), torch.cat(ys).long(), torch.cat(ts).long()


class DistilledBuffer(ExemplarsBuffer):
    """A class-balanced replay memory of distilled images (an Avalanche ``ExemplarsBuffer``).

    Args:
        max_size: the memory's budget in images' worth (at least one per class it will see). With
            plain images (``param="images"``, the default) that is the number of images; with a
            parameterisation it is a storage budget, and a class's share of ``k`` images' worth
            decodes to more images (``idc``, factor ``f``: ``k f**2``; ``haba``: its bases times its
            hallucinators), which is what the learner trains on.
        method: any registered fedcl engine (``dm``, ``dsa``, ``gm``, ``kip``, ``frepo``, ``random``,
            ``herding``, ``kcenter`` ...).
        distiller_kwargs: options for :func:`fedcl.distill.create_distiller` (iterations, model ...,
            ``param``, ``param_kwargs``, ``soft_labels``).
        num_classes: classes of the whole stream (for the labels); defaults to the largest seen + 1.
        privacy: a DP block; each experience's distillation then runs under it.
        shrink: how old classes shrink to a smaller share: ``subsample`` or ``redistill``.
        adaptive_size: True: the budget is divided over the classes seen so far (old classes shrink as
            new ones arrive); False: over ``num_classes`` from the start (a class never shrinks).
        meta: dataset facts passed to the engine (``dataset``, ``mean``, ``std``).
        seed: base seed; experience ``i`` distills with ``seed + i``.
        owner: the stream's data owner, named in its ledger and in budget errors.
        records_domain: what an experience's ``record_ids`` index (default ``<meta["dataset"]>/train``).

    Attributes:
        memories: each class's stored memory (a one-class :class:`~fedcl.distill.memory.Memory`).
        memory: each class's decoded images (what the learner trains on).
        soft: each class's learned soft labels (distributions, one per decoded image), if any.
        selects: the engine selects real images (its memory always shrinks by subsampling).
        distill_seconds: wall seconds spent distilling each experience, in order.
        privacy_spent: the privacy metadata each experience's distillation reported.
        ledger: with ``privacy``, the stream owner's :class:`~fedcl.privacy.ledger.PrivacyLedger`
            (budget ``privacy.budget``); every experience's release is recorded there.

    Raises:
        ConfigError: bad ``max_size``, ``method``, engine options or ``shrink``; ``adaptive_size=False``
            without ``num_classes`` or with fewer than one image per class.
        PrivacyError: an invalid privacy block (e.g. ``budget`` below ``epsilon``, the ``gdp`` accountant).
    """

    def __init__(self, max_size: int, *, method: str = "dm", distiller_kwargs: dict[str, Any] | None = None,
                 num_classes: int | None = None, privacy: PrivacyConfig | None = None, shrink: str = "subsample",
                 adaptive_size: bool = True, meta: dict[str, Any] | None = None, seed: int = 0,
                 owner: str = "stream", records_domain: str | None = None) -> None:
        super().__init__(max_size)
        if int(max_size) < 1:
            raise ConfigError(f"max_size must be at least 1, got {max_size}")
        if method not in list_distillers():
            raise ConfigError(f"unknown distillation method {method!r}; valid: {', '.join(list_distillers())}")
        if shrink not in SHRINK_RULES:
            raise ConfigError(f"shrink must be one of {', '.join(SHRINK_RULES)}, got {shrink!r}")
        if not adaptive_size and not num_classes:
            raise ConfigError("adaptive_size=False divides the memory over all the stream's classes: give num_classes")
        if not adaptive_size:
            self._check_size(int(num_classes))  # every class has its share from the start
        self.adaptive_size = bool(adaptive_size)
        self.method = method
        self.distiller_kwargs = {"progress": False, **(distiller_kwargs or {})}
        # validate the options now, before any training
        self.selects = not create_distiller(method, **self.distiller_kwargs).synthesises
        self.num_classes = num_classes
        self.privacy = privacy
        self.shrink = shrink
        self.meta = dict(meta or {})
        self.seed = int(seed)
        self.records_domain = records_domain or f"{self.meta.get('dataset') or 'stream'}/train"
        self.ledger: PrivacyLedger | None = None
        if privacy is not None and privacy.enabled:
            from fedcl.privacy.accounting import validate_privacy

            validate_privacy(privacy)
            self.ledger = PrivacyLedger(privacy.budget, privacy.delta, privacy.accountant, owner=owner)
        self.classes: list[int] = []
        self.memories: dict[int, Memory] = {}  # what is stored: one memory per class
        self.memory: dict[int, torch.Tensor] = {}  # what it decodes to: the images the learner sees
        self.soft: dict[int, torch.Tensor] = {}  # learned soft labels of those images, where there are any
        self.tasks: dict[int, int] = {}
        self.experiences = 0
        self.distill_seconds: list[float] = []
        self.privacy_spent: list[Any] = []
        self._dtype = torch.float32

    # ---- Avalanche interface -------------------------------------------------------------
    def post_adapt(self, agent_state: Any, exp: Any) -> None:
        """Distill ``exp``'s data into the memory (called by ``ReplayPlugin.after_training_exp``).

        Under DP the release is planned from the experience's labels and checked against the
        budget before any image is read.
        """
        ids = getattr(exp.dataset, RECORD_IDS, None)
        records = Records.from_ids(self.records_domain, list(ids)) if ids is not None else None
        targets = getattr(exp.dataset, "targets", None)
        if targets is not None:  # the labels (public facts) suffice to plan the release: check before reading images
            self.check_release(torch.as_tensor(list(targets), dtype=torch.long), records)
        x, y, t = _collect(exp.dataset)
        self._distill_experience(x, y, t, records, checked=targets is not None)

    def update(self, strategy: Any, **kwargs: Any) -> None:
        """What the stock ``ReplayPlugin`` calls after each experience (Avalanche 0.6's name for ``post_adapt``)."""
        self.post_adapt(strategy, strategy.experience)

    def resize(self, strategy: Any, new_size: int) -> None:
        """Change ``max_size`` and re-apply the share rule (a smaller memory shrinks every class)."""
        self.max_size = int(new_size)
        if self.classes:
            self._check_size(len(self.classes))
            self._apply_shares(self._shares(self.classes, []))

    # ---- the work ------------------------------------------------------------------------
    def update_from_tensors(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor | None = None, *,
                            records: Records | None = None) -> None:
        """Distill a batch of new data (one experience) into the memory.

        Classes already in memory are re-distilled from the new data only if the experience
        brings them back (e.g. a domain-incremental stream); they then take the new images.
        ``records`` are what the experience holds (None: all of the owner's data); under DP
        the release is checked against the budget first and recorded in :attr:`ledger`.

        Raises:
            ConfigError: the memory cannot hold one image per class seen.
            PrivacyError: the release would take the owner's total over ``privacy.budget``
                (nothing is distilled, the memory and ledger are unchanged).
        """
        self._distill_experience(x, y, task, records, checked=False)

    def _distill_experience(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor | None,
                            records: Records | None, checked: bool) -> None:
        seen, new, shares, num_classes, ipc = self._layout(y)
        if not checked:
            self.check_release(y, records)
        self._dtype = x.dtype
        distiller = create_distiller(self.method, **{**self.distiller_kwargs, "seed": self.seed + self.experiences})
        t0 = time.perf_counter()
        syn = distiller.distill(x.float(), y, ipc, num_classes=num_classes, privacy=self.privacy, meta=self.meta)
        spent = syn.meta.get("privacy")
        if self.ledger is not None and spent is not None:
            self.ledger.record(spent, name=f"experience {self.experiences} memory", records=records)
        self.privacy_spent.append(spent)
        memory = syn.memory if syn.memory is not None else create_memory(
            "images", new, ipc, syn.image_shape, images=syn.images)  # engines return their memory; sets from elsewhere
        for c in new:  # straight to the share (a new class's share is ipc, or one less for the remainder)
            self.memories[c] = cut(memory, c, min(shares[c], ipc))
            self.tasks[c] = int(task[y == c][0]) if task is not None else 0
        self.classes = seen
        self.experiences += 1
        self._apply_shares(shares)
        self.distill_seconds.append(time.perf_counter() - t0)  # includes re-distilling old classes (shrink)

    def check_release(self, labels: torch.Tensor, records: Records | None = None) -> float | None:
        """Plan this experience's DP release from its labels alone and check it against the budget.

        Returns:
            The owner's total epsilon if the release were made (None without DP).

        Raises:
            ConfigError: the memory cannot hold one image per class seen.
            PrivacyError: the release would exceed ``privacy.budget``; nothing is recorded.
        """
        _, new, _, num_classes, ipc = self._layout(labels)
        distiller = create_distiller(self.method, **{**self.distiller_kwargs, "seed": self.seed + self.experiences})
        if self.ledger is None or self.privacy is None or not distiller.supports_privacy:
            return None  # no DP, or an engine that refuses DP itself when asked to distill
        from fedcl.privacy.access import plan_release

        counts = torch.bincount(labels.cpu(), minlength=num_classes)[new].tolist()
        params = plan_release(distiller, counts, ipc, self.privacy)
        return self.ledger.check(params, name=f"experience {self.experiences} memory", records=records)

    def _layout(self, y: torch.Tensor) -> tuple[list[int], list[int], dict[int, int], int, int]:
        """Classes seen and new, their shares, the number of classes and the ipc to distill, from labels only."""
        new = sorted(int(c) for c in torch.unique(y))
        if self.num_classes and new[-1] >= self.num_classes:
            raise ConfigError(f"class {new[-1]} is outside the stream's num_classes={self.num_classes}")
        seen = self.classes + [c for c in new if c not in self.classes]
        self._check_size(len(seen))
        shares = self._shares(seen, new)
        num_classes = self.num_classes or max(seen) + 1
        smallest = int(torch.bincount(y.cpu(), minlength=num_classes)[new].min())
        return seen, new, shares, num_classes, min(max(shares[c] for c in new), smallest)

    def _shares(self, seen: list[int], new: list[int]) -> dict[int, int]:
        if self.adaptive_size:
            return class_shares(self.max_size, seen, new)
        return dict.fromkeys(seen, self.max_size // int(self.num_classes or 1))

    def _check_size(self, n_classes: int) -> None:
        if self.max_size < n_classes:
            raise ConfigError(f"memory of {self.max_size} images cannot hold one image for each of {n_classes} "
                              f"classes; use mem_size >= {n_classes}")

    def _apply_shares(self, shares: dict[int, int]) -> None:
        for c, share in shares.items():
            memory = self.memories[c]
            if memory.ipc <= share:
                continue
            # a selection is cut to its first picks (re-selecting from the memory would rank a handful of images
            # with a network trained on them alone)
            self.memories[c] = cut(memory, c, share) if self.shrink == "subsample" or self.selects else \
                self._redistill(memory, c, share)
        self._rebuild()

    def _redistill(self, memory: Memory, c: int, share: int) -> Memory:
        """Distill class ``c``'s decoded images into ``share`` images' worth with the same engine and memory.

        Soft labels are not learned again from one class alone: the new images take the mean of the
        class's learned distributions, which keeps what they said about the other classes.
        """
        images, soft = decode(memory)
        labels = torch.full((images.shape[0],), c, dtype=torch.long)
        kwargs = {**self.distiller_kwargs, "seed": self.seed + 10_000 + c, "soft_labels": False}
        syn = create_distiller(self.method, **kwargs).distill(
            images, labels, share, num_classes=self.num_classes or max(self.classes) + 1, meta=self.meta)
        part = syn.memory.requires_grad_(False) if syn.memory is not None else create_memory(
            "images", [c], share, syn.image_shape, images=syn.images)
        if soft is not None:
            with_soft_labels(part, soft.mean(0, keepdim=True).expand(len(part.hard_labels), -1))
        return part

    def stream_epsilon(self) -> float | None:
        """The stream owner's total epsilon, composed by :attr:`ledger` from the records each release read."""
        return self.ledger.spent() if self.ledger is not None and self.ledger.releases else None

    def _rebuild(self) -> None:
        """Decode every class's memory; the Avalanche dataset holds hard labels (soft ones: their argmax)."""
        self.memory, self.soft = {}, {}
        for c in self.classes:
            images, soft = decode(self.memories[c])
            self.memory[c] = images.to(self._dtype)
            if soft is not None:
                self.soft[c] = soft
        x, y = self.tensors(soft=False)
        t = torch.cat([torch.full((self.memory[c].shape[0],), self.tasks[c], dtype=torch.long) for c in self.classes])
        self.buffer = tensor_dataset(x, y, task_labels=t.tolist())

    # ---- inspection and checkpoints ------------------------------------------------------
    def class_counts(self) -> dict[int, int]:
        """Decoded images in memory for each class seen so far (what the learner trains on)."""
        return {c: int(self.memory[c].shape[0]) for c in self.classes}

    def class_budgets(self) -> dict[int, int]:
        """The share of each class seen so far, in images' worth of storage."""
        return {c: self.memories[c].ipc for c in self.classes}

    def stored_numel(self) -> int:
        """Numbers stored by the memory (soft labels included): what a checkpoint or a sender holds."""
        return sum(m.stored_numel() for m in self.memories.values())

    def tensors(self, soft: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoded memory as ``(images, labels)`` tensors, class by class in order of arrival.

        Args:
            soft: with learned soft labels, return them as ``(N, num_classes)`` distributions (classes
                without them as one-hot rows); False, or no soft labels: int64 class indices (the
                most likely class of each soft label).
        """
        if not self.classes:
            return torch.zeros(0), torch.zeros(0, dtype=torch.long)
        x = torch.cat([self.memory[c] for c in self.classes])
        hard = [self.soft[c].argmax(1) if c in self.soft else torch.full((self.memory[c].shape[0],), c)
                for c in self.classes]
        if not soft or not self.soft:
            return x, torch.cat(hard).long()
        width = max([self.num_classes or 0, max(self.classes) + 1, *(s.shape[1] for s in self.soft.values())])
        rows = [torch.nn.functional.pad(self.soft[c], (0, width - self.soft[c].shape[1])) if c in self.soft
                else torch.nn.functional.one_hot(h, width).float() for c, h in zip(self.classes, hard)]
        return x, torch.cat(rows)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only (safe to save with safetensors; no pickle needed to restore).

        Each class's stored memory travels as ``memory.<class>.<tensor>`` with its description as
        JSON bytes (``memories``, uint8); ``images``/``labels`` are its decoded images and hard labels.
        The ledger and the per-experience privacy records travel as JSON bytes (``privacy``, uint8).
        """
        x, y = self.tensors(soft=False)
        privacy = {"ledger": self.ledger.to_dict() if self.ledger is not None else None,
                   "privacy_spent": self.privacy_spent}
        return {**memories_state(self.memories),
                "images": x.contiguous(), "labels": y, "classes": torch.tensor(self.classes, dtype=torch.long),
                "tasks": torch.tensor([self.tasks[c] for c in self.classes], dtype=torch.long),
                "max_size": torch.tensor(self.max_size), "experiences": torch.tensor(self.experiences),
                "distill_seconds": torch.tensor(self.distill_seconds, dtype=torch.float64),
                "privacy": torch.tensor(list(json.dumps(privacy).encode()), dtype=torch.uint8)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a memory written by :meth:`state_dict` (states without ``privacy`` load without a ledger;
        states without ``memories`` hold plain images).

        The restored ledger keeps every recorded release; a buffer built with a privacy block
        states it at that block's budget, delta and accountant (the cap in force is the current one).

        Raises:
            PrivacyError: the ``privacy`` entry is not a ledger state.
            DataError: a stored memory does not fit its description.
        """
        if "privacy" in state:
            privacy = json.loads(bytes(state["privacy"].to(torch.uint8).tolist()).decode())
            saved = PrivacyLedger.from_dict(privacy["ledger"]) if privacy.get("ledger") else None
            if saved is not None and self.ledger is not None:
                self.ledger.releases = saved.releases
            elif saved is not None:
                self.ledger = saved
            self.privacy_spent = list(privacy.get("privacy_spent", []))
        self.max_size = int(state["max_size"])
        self.experiences = int(state["experiences"])
        self.classes = [int(c) for c in state["classes"]]
        self.tasks = {c: int(t) for c, t in zip(self.classes, state["tasks"])}
        self.distill_seconds = [float(s) for s in state["distill_seconds"]]
        x, y = state["images"], state["labels"]
        if "memories" in state:
            self.memories = memories_from_state(state)
        else:  # written before memories were stored: the decoded images are the memory
            self.memories = {c: create_memory("images", [c], int((y == c).sum()), tuple(x.shape[1:]),
                                              images=x[y == c].float()).requires_grad_(False) for c in self.classes}
        if self.classes:
            self._dtype = x.dtype
            self._rebuild()


class DistilledGDumbPlugin(SupervisedPlugin):
    """GDumb-style: after each experience, a fresh copy of the initial model is trained on the memory alone.

    The experience is distilled into the memory before training (its raw data is read only by the
    distiller), the strategy's own training loop then runs on the memory, and after the experience
    a fresh copy of the initial model is trained on the memory by the DC/DSA/DM evaluation protocol
    (SGD, lr/10 at half the epochs, DSA augmentation): how synthetic sets are meant to be used.

    Args:
        storage_policy: the :class:`DistilledBuffer` to update and train on.
        epochs: epochs of training on the memory (a tiny set: hundreds of epochs are cheap).
        lr: SGD learning rate (momentum 0.9, weight decay 5e-4, x0.1 at half the epochs).
        batch_size: minibatch size on the memory.
        dsa: DSA augmentation of every minibatch (the dataset's reference strategy, from the buffer's meta).
    """

    def __init__(self, storage_policy: DistilledBuffer, *, epochs: int = 300, lr: float = 0.01,
                 batch_size: int = 256, dsa: bool = True) -> None:
        super().__init__()
        self.storage_policy = storage_policy
        self.epochs, self.lr, self.batch_size, self.dsa = int(epochs), float(lr), int(batch_size), bool(dsa)
        self.init_model: torch.nn.Module | None = None

    def before_training(self, strategy: SupervisedTemplate, **kwargs: Any) -> None:
        if self.init_model is None:
            self.init_model = copy.deepcopy(strategy.model).cpu()

    def after_train_dataset_adaptation(self, strategy: SupervisedTemplate, **kwargs: Any) -> None:
        # distill first, then let the strategy's loop see the memory only (as stock GDumb does): training on the
        # whole experience would be discarded by after_training_exp anyway
        self.storage_policy.post_adapt(strategy, strategy.experience)
        strategy.adapted_dataset = self.storage_policy.buffer

    def after_training_exp(self, strategy: SupervisedTemplate, **kwargs: Any) -> None:
        from fedcl.distill.augment import DSA, default_strategy
        from fedcl.train import train_model

        x, y = self.storage_policy.tensors()
        model = copy.deepcopy(self.init_model).to(strategy.device)
        gen = torch.Generator().manual_seed(self.storage_policy.seed + self.storage_policy.experiences)
        augment = None
        if self.dsa:
            aug = DSA(default_strategy(self.storage_policy.meta.get("dataset", "")))
            augment = lambda xb: aug.random(xb, gen)  # noqa: E731
        strategy.model = train_model(model, x, y, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                                     augment=augment, generator=gen, device=strategy.device)


class DistilledReplay(SupervisedTemplate):
    """Replay from a distilled memory, in the style of Avalanche's ``Replay`` strategy.

    Args:
        model: the network.
        optimizer: its optimizer.
        criterion: the loss.
        mem_size: the memory's budget in images' worth (a storage budget with a parameterisation: see
            :class:`DistilledBuffer`).
        method: fedcl distillation engine (``dm`` default; ``random``/``herding`` fill the same budget by selection).
        distiller_kwargs: engine options (iterations, model, model_kwargs, device ...).
        privacy: make each experience's distillation DP.
        shrink: ``subsample`` or ``redistill`` (see the module docstring).
        adaptive_size: divide the budget over the classes seen so far (True) or over ``num_classes`` from the
            start (see the module docstring).
        gdumb: train a fresh model on the memory alone after each experience instead of replaying.
        gdumb_epochs: epochs of that training.
        gdumb_lr: its SGD learning rate.
        gdumb_dsa: DSA augmentation during that training.
        num_classes: classes of the whole stream.
        meta: dataset facts for the engine (``dataset``, ``mean``, ``std``).
        seed: drives the distillation.
        owner: the stream's data owner (see :class:`DistilledBuffer`).
        records_domain: what the experiences' ``record_ids`` index (see :class:`DistilledBuffer`).
        plugins: further plugins, passed through.
        **base_kwargs: everything else ``SupervisedTemplate`` takes (train_mb_size, train_epochs,
            eval_mb_size, device, evaluator, eval_every ...).
    """

    def __init__(self, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, criterion: Any,
                 mem_size: int = 200, method: str = "dm", distiller_kwargs: dict[str, Any] | None = None,
                 privacy: PrivacyConfig | None = None, shrink: str = "subsample", adaptive_size: bool = True,
                 gdumb: bool = False, gdumb_epochs: int = 300, gdumb_lr: float = 0.01,
                 gdumb_dsa: bool = True, num_classes: int | None = None, meta: dict[str, Any] | None = None,
                 seed: int = 0, owner: str = "stream", records_domain: str | None = None,
                 plugins: list[SupervisedPlugin] | None = None,
                 **base_kwargs: Any) -> None:
        self.storage_policy = DistilledBuffer(mem_size, method=method, distiller_kwargs=distiller_kwargs,
                                              num_classes=num_classes, privacy=privacy, shrink=shrink,
                                              adaptive_size=adaptive_size, meta=meta, seed=seed, owner=owner,
                                              records_domain=records_domain)
        plugin: SupervisedPlugin
        if gdumb:
            plugin = DistilledGDumbPlugin(self.storage_policy, epochs=gdumb_epochs, lr=gdumb_lr, dsa=gdumb_dsa)
        else:
            plugin = ReplayPlugin(mem_size=mem_size, storage_policy=self.storage_policy)
        plugins = [*(plugins or []), plugin]
        super().__init__(model=model, optimizer=optimizer, criterion=criterion, plugins=plugins, **base_kwargs)
