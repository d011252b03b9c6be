"""Selection baselines: real images chosen at random, by herding, or by k-center.

Herding and k-center work in the feature space of a ConvNet trained briefly on the
real data (``features="trained"``), of a random network (``"random"``), or on raw
pixels (``"pixels"``).
"""

from __future__ import annotations

from typing import Any

import torch

from fedcl.distill.access import RealAccess
from fedcl.distill.base import Callback, ClassData, Distiller, register_distiller
from fedcl.distill.memory import Memory
from fedcl.errors import ConfigError
from fedcl.train import train_model

__all__ = ["HerdingSelection", "KCenterSelection", "RandomSelection", "herding", "kcenter"]


def herding(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of ``k`` rows whose running mean tracks the mean of ``features`` (Welling 2009)."""
    mu = features.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(features.shape[0], dtype=torch.bool, device=features.device)
    for i in range(k):
        # the candidate that brings the mean of the chosen set closest to mu
        dist = ((mu - (running + features) / (i + 1)) ** 2).sum(1)
        dist[~available] = float("inf")
        j = int(dist.argmin())
        chosen.append(j)
        available[j] = False
        running += features[j]
    return torch.tensor(chosen, dtype=torch.long)


def kcenter(features: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy k-center: start at the row nearest the mean, then add the farthest row each time."""
    first = int(((features - features.mean(0)) ** 2).sum(1).argmin())
    chosen = [first]
    mind = ((features - features[first]) ** 2).sum(1)
    for _ in range(k - 1):
        j = int(mind.argmax())
        chosen.append(j)
        mind = torch.minimum(mind, ((features - features[j]) ** 2).sum(1))
    return torch.tensor(chosen, dtype=torch.long)


class _Selection(Distiller):
    """Shared logic: embed the real images, pick ``ipc`` per class."""

    synthesises = False

    def __init__(self, *, features: str = "trained", feature_epochs: int = 2, **kwargs: Any) -> None:
        if kwargs.get("init") not in (None, "real"):
            raise ConfigError(f"{type(self).__name__} selects real images; init must be 'real'")
        if features not in ("trained", "random", "pixels"):
            raise ConfigError(f"features must be trained, random or pixels, got {features!r}")
        super().__init__(**kwargs)
        self.features = features
        self.feature_epochs = int(feature_epochs)

    def pick(self, feats: torch.Tensor, k: int) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def _embed(self, real: ClassData, gen: torch.Generator) -> torch.Tensor:
        if self.features == "pixels":
            return real.images.flatten(1)
        net = self.make_network(real.images.shape[1:], real.num_classes)
        if self.features == "trained":
            with torch.enable_grad():
                train_model(net, real.images, real.labels, epochs=self.feature_epochs, batch_size=128, generator=gen)
        net.eval()
        return torch.cat([net.embed(real.images[i:i + 1024]) for i in range(0, real.images.shape[0], 1024)])

    def _distill(self, access: RealAccess, memory: Memory, classes: list[int], gen: torch.Generator,
                 callback: Callback | None) -> None:
        # selection returns real images, so it reads the data itself (and can never be private)
        real = access.real
        # one pick per decoded image (idc: factor**2 per stored image), cycled for a class smaller than that
        ipc = min(memory.per_class, min(int(real.counts[c]) for c in classes))
        feats = self._embed(real, gen)
        picks = [real.indices(c)[self.pick(feats[real.indices(c)], ipc)] for c in classes]
        memory.init_from_images(real.images[torch.cat(picks).to(real.device)])


@register_distiller("random")
class RandomSelection(_Selection):
    """``ipc`` real images per class drawn uniformly at random (the seed decides)."""

    def _distill(self, access: RealAccess, memory: Memory, classes: list[int], gen: torch.Generator,
                 callback: Callback | None) -> None:
        return None  # the base class already drew ipc random real images per class


@register_distiller("herding")
class HerdingSelection(_Selection):
    """Herding in feature space: the images whose mean best tracks the class mean."""

    def pick(self, feats: torch.Tensor, k: int) -> torch.Tensor:
        return herding(feats, k)


@register_distiller("kcenter")
class KCenterSelection(_Selection):
    """Greedy k-center in feature space: images that cover the class."""

    def pick(self, feats: torch.Tensor, k: int) -> torch.Tensor:
        return kcenter(feats, k)
