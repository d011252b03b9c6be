"""The ``fedcl continual`` structured config (omegaconf dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedcl.config import DataConfig
from fedcl.privacy.config import PrivacyConfig

__all__ = ["ContinualConfig", "ContinualEval", "MemoryDistillConfig"]


@dataclass
class ContinualEval:
    """Where the stream's accuracy is measured.

    Attributes:
        split: ``test``, or ``val``: the validation split carved by ``data.val_fraction`` is the test
            stream (to choose settings; the training stream lacks it either way).
    """

    split: str = "test"


@dataclass
class MemoryDistillConfig:
    """How the distilled strategies build their memory (see :class:`strategies.replay.DistilledBuffer`).

    Defaults (measured on split digits, memory 20 and 100; experiments/results/continual.md): a DM memory
    is a training set built to train a model from scratch, so the learner trains a fresh model on it
    (``gdumb``) rather than mixing 2 images per class into minibatches of 64 real ones; old classes
    shrink by re-distilling (``redistill``: the share is optimised as a set, not cut from a larger set).
    ``distilled_random`` and ``distilled_herding`` fill a memory of the same budget and share rule by
    selection and train the very same learner, so the difference between them and ``distilled`` is the memory.

    Attributes:
        iterations: distillation iterations of the engine (``dm`` for ``distilled``, ``dsa`` for ``distilled_dsa``).
        lr_img: learning rate of the stored images (None: the engine's default, dm 1.0, dsa 0.1).
        batch_real: real images per class the engine reads at each iteration.
        model_kwargs: options of the engine's matching network (empty: the learner's ``model_kwargs``).
        engine: further options passed to the engine of the synthesising strategies (e.g. ``{dsa: false}``).
        param: how the memory is stored: ``images`` (free pixels), ``idc`` (multi-formation) or ``haba``
            (bases and hallucinators); with a parameterisation ``mem_size`` is a storage budget in images'
            worth and decodes to more images. Selection strategies store images unless ``param_selections``.
        param_kwargs: options of the parameterisation, e.g. ``{factor: 2}`` for idc, ``{hallucinators: 5}`` for haba.
        param_selections: the selection baselines (``distilled_random``, ``distilled_herding``) store their real
            images in ``param`` too (idc: ``factor**2`` downsampled real images per stored image), so that a
            comparison separates what the parameterisation adds from what distillation adds (images or idc only).
        soft_labels: learn soft labels with the images (not with selection or under DP); the fresh-model learner
            trains on them, replay on their most likely class.
        shrink: how old classes shrink to a smaller share: ``subsample`` or ``redistill`` (selections always subsample).
        adaptive_size: as Avalanche's ``ClassBalancedBuffer``: true divides ``mem_size`` over the classes seen so
            far (old classes shrink as new ones arrive); false over all the benchmark's classes from the first
            experience (each class is distilled once at the share it keeps; the memory fills up as classes arrive).
        gdumb: train a fresh model on the memory alone after each experience (DSA augmentation) instead of
            replaying it.
        gdumb_epochs: epochs of that fresh model on the memory.
    """

    iterations: int = 200
    lr_img: float | None = None  # None: the engine's default (dm 1.0, dsa 0.1)
    batch_real: int = 256
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    param: str = "images"
    param_kwargs: dict[str, Any] = field(default_factory=dict)
    param_selections: bool = False
    soft_labels: bool = False
    shrink: str = "redistill"
    adaptive_size: bool = True
    gdumb: bool = True
    gdumb_epochs: int = 300


@dataclass
class ContinualConfig:
    """``fedcl continual``: run strategies on one benchmark with one memory budget over several seeds.

    Attributes:
        benchmark: ``split_digits`` (embedded), ``permuted_digits`` (embedded), ``split_mnist``,
            ``split_fashion_mnist``, ``permuted_mnist``, ``split_cifar10``, ``split_cifar10_jpeg``,
            ``split_imagefolder`` (``data.root=DIR`` holding ``train/<class>/*`` and ``test/<class>/*``).
        strategies: any of ``naive``, ``replay``, ``herding``, ``gdumb``, ``distilled``, ``distilled_dsa``,
            ``distilled_random``, ``distilled_herding`` (the same budget and learner as ``distilled``, filled by
            random or herding selection), ``distilled_dp`` (needs ``privacy.epsilon`` or
            ``privacy.noise_multiplier``: the target of each experience's release; ``privacy.budget`` caps the
            stream's total, composed over the records read).
        mem_size: memory budget in images' worth: images per class x classes (10, 20, 100 hold 1, 2, 10 images
            per class at the end of a 10-class stream); at least the number of classes.
        epochs: training epochs per experience.
        lr, momentum, batch_size: SGD settings of every strategy.
        seeds: one run of every strategy per seed (the class order follows the seed).
        model, model_kwargs: the learner (a fedcl model).
        n_experiences: None takes the benchmark's default (5).
        device: ``auto``, ``cpu``, ``cuda``.
        threads: torch CPU threads (0 leaves torch's default).
        out: run folder (default ``runs/continual-<timestamp>``).
        distill: how the distilled strategies build and use their memory (``distill.*`` keys).
        privacy: the DP block of ``distilled_dp`` (``privacy.*`` keys).
        data: where the benchmark's dataset lives and how it is loaded (``data.*`` keys).
        eval: where accuracy is measured (``eval.split``).
    """

    benchmark: str = "split_digits"
    strategies: list[str] = field(default_factory=lambda: ["naive", "replay", "herding", "gdumb", "distilled",
                                                           "distilled_random", "distilled_herding"])
    mem_size: int = 100
    epochs: int = 5
    lr: float = 0.01
    momentum: float = 0.9
    batch_size: int = 64
    seeds: list[int] = field(default_factory=lambda: [0])
    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    n_experiences: int | None = None
    device: str = "auto"
    threads: int = 0
    out: str | None = None
    distill: MemoryDistillConfig = field(default_factory=MemoryDistillConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: ContinualEval = field(default_factory=ContinualEval)
