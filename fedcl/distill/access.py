"""The only door from an engine to real data.

Every engine reads real data through a :class:`RealAccess` that the :class:`~fedcl.distill.Distiller`
hands to it, and only in one shape: *per class, the mean over a sampled batch of a per-example
quantity* ``f(x, y)`` (DM's embeddings, DC's per-sample gradients, a kernel loss's per-example
terms). An engine draws a :class:`RealBatch` at each step and asks the access to reduce it:

- :meth:`RealAccess.class_means` -- per class, the mean of the rows ``f(x, y)``;
- :meth:`RealAccess.mean_gradient` -- the mean, over the batch, of each example's gradient of
  a loss (the gradient of the mean loss).

This exact access returns plain batch means of ``batch_real`` images per class. The private
access (:class:`fedcl.privacy.access.PrivateAccess`) implements the same interface with the
subsampled Gaussian mechanism: a Poisson sample per step, each example's contribution clipped,
Gaussian noise added, the sum divided by the expected batch, and every step recorded with an
Opacus accountant. So every engine written against this interface is DP-capable without a DP
copy of its loop, and the DP argument lives in one place.

The core defines this interface; :mod:`fedcl.privacy` implements it. A privacy block reaches the
core only as an object with ``enabled`` and ``open_access(engine, real, classes, ipc, gen)``
(:class:`PrivacyPolicy`), so the core never imports :mod:`fedcl.privacy`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from fedcl.distill.base import ClassData, Distiller

__all__ = ["PrivacyPolicy", "RealAccess", "RealBatch", "class_means"]

#: rows of a per-example quantity: ``f(images, labels) -> (B, D)``
RowFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: what an engine applies to a real batch before the network sees it (e.g. a DSA transformation)
Transform = Callable[[torch.Tensor], torch.Tensor]


def class_means(emb: torch.Tensor, labels: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Mean row of each class in ``classes`` (rows of the result in that order; an absent class gives 0)."""
    index = torch.full((int(max(classes)) + 1,), -1, dtype=torch.long, device=emb.device)
    index[torch.tensor(list(classes), device=emb.device)] = torch.arange(len(classes), device=emb.device)
    rows = index[labels]
    sums = torch.zeros(len(classes), emb.shape[1], device=emb.device, dtype=emb.dtype).index_add_(0, rows, emb)
    counts = torch.bincount(rows, minlength=len(classes)).clamp_min(1).to(emb.dtype)
    return sums / counts[:, None]


@dataclass(frozen=True)
class RealBatch:
    """Real examples drawn for one step. Engines pass it back to the access that drew it and never
    read its tensors themselves (that is what keeps the access the only door)."""

    images: torch.Tensor
    labels: torch.Tensor
    #: the classes this batch was drawn for (some may have no example in it)
    classes: tuple[int, ...] = ()


class PrivacyPolicy(Protocol):
    """What the core needs of a privacy block (:class:`fedcl.privacy.PrivacyConfig` implements it)."""

    @property
    def enabled(self) -> bool: ...

    def open_access(self, engine: Distiller, real: ClassData, classes: list[int], ipc: int,
                    gen: torch.Generator) -> RealAccess: ...


class RealAccess:
    """Exact access: ``batch_real`` images per class without replacement, plain means.

    Args:
        real: the real data, grouped by class.
        classes: the classes being distilled.
        batch_real: images drawn per class at each step.
        gen: the engine's random generator (drives the sampling).
    """

    #: whether reads are private (the DP access sets it)
    private = False
    #: progress-bar prefix
    prefix = ""
    #: DM under DP centres contributions on the synthetic mean embedding (a public reference)
    centred = False
    #: passes over released targets after the last step (post-processing; DP only)
    replay = 0

    def __init__(self, real: ClassData, classes: list[int], batch_real: int, gen: torch.Generator) -> None:
        self.real, self.classes, self.batch_real, self.gen = real, list(classes), int(batch_real), gen
        self.steps = 0

    def network(self, net: nn.Module, first: bool = False) -> nn.Module:
        """The network that will see real data (the DP access makes it per-example safe)."""
        return net

    def step(self) -> None:
        """Start a step: every class may then be read once (the DP access draws its Poisson sample)."""
        self.steps += 1

    def batch(self, classes: Sequence[int] | None = None) -> RealBatch:
        """This step's real examples of ``classes`` (default: every class), class by class."""
        classes = tuple(self.classes if classes is None else classes)
        x, y = self.real.sample(self.batch_real, self.gen, classes)
        return RealBatch(x, y, classes)

    def bound(self, rows: torch.Tensor) -> torch.Tensor:
        """What the access does to each real row before averaging, for the engine to do the same to its
        synthetic rows (identity here; clipped or normalised under DP)."""
        return rows

    def class_means(self, batch: RealBatch, f: RowFn, classes: Sequence[int]) -> torch.Tensor:
        """Per class of ``classes``, the mean of the rows ``f(x, y)`` over the batch (``(K, D)``), without a graph."""
        with torch.no_grad():
            rows = f(batch.images, batch.labels)  # half-precision rows are averaged in float32, float64 stays
            return class_means(rows.to(torch.promote_types(rows.dtype, torch.float32)), batch.labels, classes)

    def mean_gradient(self, batch: RealBatch, net: nn.Module, params: list[nn.Parameter],
                      transform: Transform | None = None) -> list[torch.Tensor]:
        """The mean over the batch of each example's cross-entropy gradient in ``params`` (no graph kept).

        ``transform`` (e.g. a sampled DSA transformation) is applied to a non-empty batch first.
        """
        x = transform(batch.images) if transform is not None and len(batch.images) else batch.images
        loss = F.cross_entropy(net(x), batch.labels)
        return [g.detach() for g in torch.autograd.grad(loss, params)]

    def planned(self) -> dict[str, Any] | None:
        """The release's planned privacy parameters, before any read (None: not private)."""
        return None

    def record(self) -> dict[str, Any] | None:
        """The release's privacy record (None: not private)."""
        return None
