"""The ``fedcl continual`` structured config (omegaconf dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedcl.config import DataConfig
from fedcl.privacy.config import PrivacyConfig

__all__ = ["ContinualConfig", "MemoryDistillConfig"]


@dataclass
class MemoryDistillConfig:
    """How the distilled strategies build their memory (see :class:`strategies.replay.DistilledBuffer`).

    ``iterations``/``lr_img``/``batch_real`` are the engine's (``dm`` for ``distilled``, ``dsa`` for
    ``distilled_dsa``); ``engine`` passes further engine options; ``shrink`` is ``subsample`` or
    ``redistill``; ``gdumb`` trains a fresh model on the memory alone after each experience
    (``gdumb_epochs`` epochs, DSA augmentation) instead of replaying it.

    Defaults (measured on split digits, memory 20 and 100; experiments/results/continual.md): a DM memory
    is a training set built to train a model from scratch, so the learner trains a fresh model on it
    (``gdumb``) rather than mixing 2 images per class into minibatches of 64 real ones; old classes
    shrink by re-distilling (``redistill``: the share is optimised as a set, not cut from a larger set).
    """

    iterations: int = 200
    lr_img: float | None = None  # None: the engine's default (dm 1.0, dsa 0.1)
    batch_real: int = 256
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    shrink: str = "redistill"
    gdumb: bool = True
    gdumb_epochs: int = 300


@dataclass
class ContinualConfig:
    """``fedcl continual``: run strategies on one benchmark with one memory budget over several seeds.

    Attributes:
        benchmark: ``split_digits`` (embedded), ``permuted_digits`` (embedded), ``split_mnist``,
            ``split_fashion_mnist``, ``permuted_mnist``, ``split_cifar10``.
        strategies: any of ``naive``, ``replay``, ``herding``, ``gdumb``, ``distilled``, ``distilled_dsa``,
            ``distilled_dp`` (needs ``privacy.epsilon`` or ``privacy.noise_multiplier``: the target of each
            experience's release; ``privacy.budget`` caps the stream's total, composed over the records read).
        mem_size: memory budget in images (at least the number of classes).
        epochs: training epochs per experience.
        lr, momentum, batch_size: SGD settings of every strategy.
        seeds: one run of every strategy per seed (the class order follows the seed).
        model, model_kwargs: the learner (a fedcl model).
        n_experiences: None takes the benchmark's default (5).
        device: ``auto``, ``cpu``, ``cuda``.
        threads: torch CPU threads (0 leaves torch's default).
        out: run folder (default ``runs/continual-<timestamp>``).
    """

    benchmark: str = "split_digits"
    strategies: list[str] = field(default_factory=lambda: ["naive", "replay", "herding", "gdumb", "distilled"])
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
