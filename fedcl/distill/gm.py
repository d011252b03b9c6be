"""Gradient matching: DC (Zhao et al., ICLR 2021) and DSA (Zhao & Bilen, ICML 2021).

Each outer iteration draws a fresh network. For ``outer_loop`` steps, the gradient
that a batch of real images of one class induces in the network is matched, layer by
layer, with the gradient of that class's synthetic images (the DC distance: one minus
the cosine similarity of each output unit's weight gradient, summed); between steps the
network is trained for ``inner_loop`` epochs on the synthetic set. DSA applies the same
sampled augmentation to both batches (and augments the inner training).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedcl.distill.augment import DSA, default_strategy
from fedcl.distill.base import Callback, ClassData, Distiller, register_distiller
from fedcl.privacy.config import PrivacyConfig
from fedcl.train import train_model
from fedcl.utils import progress

__all__ = ["DSAGradientMatching", "GradientMatching", "RealAccess", "gradient_distance", "loops_for_ipc"]

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

    def real_gradients(self, net: nn.Module, params: list[nn.Parameter], x: torch.Tensor,
                       y: torch.Tensor) -> list[torch.Tensor]:
        """Gradient of the mean cross-entropy on a real batch (no graph kept)."""
        return [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(x), y), params)]

    def _distill(self, real: ClassData, syn: torch.Tensor, syn_labels: torch.Tensor, classes: list[int],
                 gen: torch.Generator, privacy: PrivacyConfig | None, callback: Callback | None) -> torch.Tensor:
        # --- DP branch (owned by fedcl.privacy; it runs match_loop with a private RealAccess) ---
        if privacy is not None and privacy.enabled:
            from fedcl.privacy.engines import distill_gm_private

            return distill_gm_private(self, real, syn, syn_labels, classes, gen, privacy, callback)
        # --- end of DP branch ---
        return self.match_loop(RealAccess(self, real, gen), syn, syn_labels, classes, real.num_classes, gen, callback)

    def match_loop(self, access: RealAccess, syn: torch.Tensor, syn_labels: torch.Tensor, classes: list[int],
                   num_classes: int, gen: torch.Generator, callback: Callback | None) -> torch.Tensor:
        """The DC/DSA loop; every read of real data goes through ``access`` (DP swaps it)."""
        aug = DSA(self.dsa_strategy or default_strategy(self._meta.get("dataset", ""))) if self.dsa else None
        ipc = syn.shape[0] // len(classes)
        outer, inner = loops_for_ipc(ipc)
        outer = self.outer_loop or outer
        inner = self.inner_loop if self.inner_loop is not None else inner
        syn = syn.detach().clone().requires_grad_(True)
        opt = torch.optim.SGD([syn], lr=self.lr_img, momentum=self.momentum)
        in_shape = syn.shape[1:]
        for it in progress(range(self.iterations), desc=f"{access.prefix}{self.name} {self._meta.get('dataset', '')}",
                           enabled=self.progress):
            net = access.network(self.make_network(in_shape, num_classes), it)
            net.train()
            params = [p for p in net.parameters() if p.requires_grad]
            for ol in range(outer):
                opt.zero_grad(set_to_none=True)
                access.begin_step()
                for ci, c in enumerate(classes):
                    xr, yr = access.batch(ci, c)
                    xs, ys = syn[ci * ipc:(ci + 1) * ipc], syn_labels[ci * ipc:(ci + 1) * ipc]
                    if aug is not None:
                        p = aug.sample(1, gen)
                        xr = aug(xr, p) if len(xr) else xr
                        xs = aug(xs, p)
                    g_real = access.gradient(net, params, xr, yr, ci)
                    g_syn = torch.autograd.grad(F.cross_entropy(net(xs), ys), params, create_graph=True)
                    # one backward per class frees that class's graph at once; grads accumulate in syn.grad
                    gradient_distance(g_syn, g_real).backward()
                opt.step()
                if ol == outer - 1:
                    break
                augment = (lambda xb: aug.random(xb, gen)) if aug is not None else None
                train_model(net, syn.detach(), syn_labels, epochs=inner, lr=self.lr_net, momentum=0.0,
                            weight_decay=0.0, batch_size=self.batch_train, augment=augment, lr_decay=False,
                            generator=gen)
            if callback is not None:
                callback(it + 1, self.wrap(syn, syn_labels, num_classes))
        return syn.detach()


class RealAccess:
    """How :meth:`GradientMatching.match_loop` reads real data: per class, ``batch_real`` sampled
    images and the plain mean cross-entropy gradient. :mod:`fedcl.privacy.engines` subclasses it
    with Poisson sampling and clipped, noised per-sample gradients."""

    prefix = ""

    def __init__(self, engine: GradientMatching, real: ClassData, gen: torch.Generator) -> None:
        self.engine, self.real, self.gen = engine, real, gen

    def network(self, net: nn.Module, it: int) -> nn.Module:
        """The matching network of iteration ``it`` (DP: made Opacus-compatible)."""
        return net

    def begin_step(self) -> None:
        """Called before each matching step's class loop (DP: draws the step's Poisson sample)."""

    def batch(self, ci: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The real images and labels of class ``c`` (the ``ci``-th class) for this step."""
        return self.real.sample(self.engine.batch_real, self.gen, [c])

    def gradient(self, net: nn.Module, params: list[nn.Parameter], x: torch.Tensor, y: torch.Tensor,
                 ci: int) -> list[torch.Tensor]:
        """The real-data gradient that the synthetic gradient is matched to."""
        return self.engine.real_gradients(net, params, x, y)


@register_distiller("dsa")
class DSAGradientMatching(GradientMatching):
    """Gradient matching with differentiable siamese augmentation (DSA); see :class:`GradientMatching`."""

    default_dsa = True
