"""Gradient matching: DC (Zhao et al., ICLR 2021) and DSA (Zhao & Bilen, ICML 2021).

Each outer iteration draws a fresh network. For ``outer_loop`` steps, the gradient
that a batch of real images of one class induces in the network is matched, layer by
layer, with the gradient of that class's synthetic images (the DC distance: one minus
the cosine similarity of each output unit's weight gradient, summed); between steps the
network is trained for ``inner_loop`` epochs on the synthetic set. DSA applies the same
sampled augmentation to both batches (and augments the inner training).

The real gradients come from the engine's access (:mod:`fedcl.distill.access`): the plain
gradient of the mean loss, or under DP a DP-SGD gradient (per-sample gradients clipped,
summed, noised, divided by the expected batch); each matching step is one step of the
mechanism for every class.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from fedcl.distill.access import RealAccess
from fedcl.distill.augment import DSA, default_strategy
from fedcl.distill.base import Callback, Distiller, register_distiller
from fedcl.distill.memory import Memory
from fedcl.train import train_model
from fedcl.utils import progress

__all__ = ["DSAGradientMatching", "GradientMatching", "gradient_distance", "loops_for_ipc"]

# (outer_loop, inner_loop) by images per class, from the reference implementation
_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def loops_for_ipc(ipc: int) -> tuple[int, int]:
    """The reference (outer_loop, inner_loop) for ``ipc`` (the nearest listed ipc below it)."""
    key = max(k for k in _LOOPS if k <= max(ipc, 1))
    return _LOOPS[key]


def gradient_distance(g_syn: Sequence[torch.Tensor], g_real: Sequence[torch.Tensor]) -> torch.Tensor:
    """The DC layer-wise distance: sum over output units of ``1 - cos(g_syn, g_real)``.

    Biases and normalisation parameters (1-D tensors) are skipped, as in the paper.
    """
    total = g_syn[0].new_zeros(())
    for gs, gr in zip(g_syn, g_real, strict=True):
        if gs.ndim == 1:
            continue
        gs, gr = gs.reshape(gs.shape[0], -1), gr.reshape(gr.shape[0], -1)
        cos = (gs * gr).sum(-1) / (gs.norm(dim=-1) * gr.norm(dim=-1) + 1e-6)
        total = total + (1 - cos).sum()
    return total


@register_distiller("gm")
class GradientMatching(Distiller):
    """Dataset condensation with gradient matching (DC).

    Args:
        iterations: outer iterations, one fresh network each (1,000 in the paper).
        batch_real: real images per class per matching step (256).
        lr_img: SGD learning rate of the synthetic images (0.1), momentum 0.5.
        lr_net: learning rate of the network's inner training (0.01).
        outer_loop, inner_loop: None picks the paper's values for the ipc.
        batch_train: minibatch of the inner training.
        dsa: siamese augmentation (off for ``gm``, on for ``dsa``).
        dsa_strategy: None picks the dataset's reference strategy.
        **kwargs: see :class:`Distiller`. DC starts from noise in the paper; fedcl's
            default is real images for every engine (``init="noise"`` for the paper's).
    """

    supports_privacy = True
    default_dsa = False

    def __init__(self, *, iterations: int = 1000, batch_real: int = 256, lr_img: float = 0.1, momentum: float = 0.5,
                 lr_net: float = 0.01, outer_loop: int | None = None, inner_loop: int | None = None,
                 batch_train: int = 256, dsa: bool | None = None, dsa_strategy: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.iterations = int(iterations)
        self.batch_real = int(batch_real)
        self.lr_img = float(lr_img)
        self.momentum = float(momentum)
        self.lr_net = float(lr_net)
        self.outer_loop, self.inner_loop = outer_loop, inner_loop
        self.batch_train = int(batch_train)
        self.dsa = self.default_dsa if dsa is None else bool(dsa)
        self.dsa_strategy = dsa_strategy

    def release_steps(self, ipc: int) -> int:
        """Each class is read once per matching step: ``iterations * outer_loop``."""
        return int(self.iterations) * int(self.outer_loop or loops_for_ipc(ipc)[0])

    def _distill(self, access: RealAccess, memory: Memory, classes: list[int], gen: torch.Generator,
                 callback: Callback | None) -> None:
        aug = DSA(self.dsa_strategy or default_strategy(self._meta.get("dataset", ""))) if self.dsa else None
        ipc = memory.per_class  # decoded images per class
        outer, inner = loops_for_ipc(ipc)
        outer = self.outer_loop or outer
        inner = self.inner_loop if self.inner_loop is not None else inner
        num_classes = access.real.num_classes
        opt = self.optimizer(memory, self.lr_img, self.momentum)
        in_shape = memory.image_shape
        for it in progress(range(self.iterations), desc=f"{access.prefix}{self.name} {self._meta.get('dataset', '')}",
                           enabled=self.progress):
            net = access.network(self.make_network(in_shape, num_classes), first=it == 0)
            net.train()
            params = [p for p in net.parameters() if p.requires_grad]
            for ol in range(outer):
                opt.zero_grad(set_to_none=True)
                access.step()
                for ci, c in enumerate(classes):
                    batch = access.batch([c])
                    # decoded per class: each class's backward frees its own graph
                    rows = slice(ci * ipc, (ci + 1) * ipc)
                    xs, ys = memory()[rows], memory.labels()[rows]
                    transform = None
                    if aug is not None:
                        p = aug.sample(1, gen)
                        xs = aug(xs, p)
                        transform = partial(aug, params=p)
                    g_real = access.mean_gradient(batch, net, params, transform)
                    g_syn = torch.autograd.grad(F.cross_entropy(net(xs), ys), params, create_graph=True)
                    # one backward per class frees that class's graph at once; grads accumulate in syn.grad
                    gradient_distance(g_syn, g_real).backward()
                opt.step()
                if ol == outer - 1:
                    break
                augment = (lambda xb: aug.random(xb, gen)) if aug is not None else None
                with torch.no_grad():
                    syn, syn_labels = memory(), memory.labels()
                train_model(net, syn, syn_labels, epochs=inner, lr=self.lr_net, momentum=0.0,
                            weight_decay=0.0, batch_size=self.batch_train, augment=augment, lr_decay=False,
                            generator=gen)
            if callback is not None:
                callback(it + 1, self.wrap(memory, num_classes))


@register_distiller("dsa")
class DSAGradientMatching(GradientMatching):
    """Gradient matching with differentiable siamese augmentation (DSA); see :class:`GradientMatching`."""

    default_dsa = True
