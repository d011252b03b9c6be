"""Meta-model matching with a closed-form inner loop: kernel ridge regression on the synthetic set.

A model is fitted in closed form on the synthetic set and scored on real data. With features
``psi(x)`` (D per image), the head is ``W = psi_s^T (psi_s psi_s^T + lam I)^{-1} Y_s`` (``lam`` is
``reg`` times the mean of the kernel's diagonal, as in both papers) and the loss is the mean, over
the real examples, of ``||y - W^T psi(x)||^2`` (labels one-hot minus ``1/K``, as in both papers).
The engines differ only in the features: :class:`KernelInducingPoints` (``kip``, RFAD) uses random
features of many freshly initialised networks (approximating the NNGP kernel); ``frepo``
(:mod:`fedcl.distill.frepo`) uses the features of a pool of networks trained online on the
synthetic set.

**The real side through the access.** The loss depends on the synthetic set only through ``W``
(the real features do not see it), so its value and its gradient in ``W`` are all that a step
needs: ``dL/dW = -2 G`` with ``G = mean_c E_c[psi(x) e(x)^T]``, where ``e = y - W^T psi(x)`` is an
example's residual. Both are per-class means of the per-example rows ``[psi e^T, ||e||^2]``
(:func:`residual_rows`, computed at the current ``W``, a function of the synthetic set alone), so
they are read with :meth:`~fedcl.distill.access.RealAccess.class_means`; :func:`kernel_loss` then
equals the KRR loss in value and in gradient, and the synthetic side keeps its graph. Classes weigh
equally (the exact access draws ``batch_real`` images of each). Each row is an example's gradient of
the loss in the head ``W``, so under DP the private access bounds those per-example gradients
(each scaled to norm ``max_grad_norm``) and adds noise, and the engine is private with no DP copy
of its loop.

The mean-squared loss is what makes the real side a per-class mean; RFAD's Platt (cross-entropy)
variant is not, so it is not offered.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedcl.distill.access import RealAccess
from fedcl.distill.base import Callback, Distiller, register_distiller
from fedcl.distill.memory import Memory
from fedcl.errors import ConfigError
from fedcl.utils import progress

__all__ = ["KernelInducingPoints", "KernelMatching", "kernel_loss", "krr_head", "krr_loss", "nngp_init_",
           "residual_rows"]

#: features of a batch of images, ``(B, C, H, W) -> (B, D)``
FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def krr_head(psi_s: torch.Tensor, y_s: torch.Tensor, reg: float) -> torch.Tensor:
    """The kernel ridge regression head ``psi_s^T (psi_s psi_s^T + lam I)^{-1} y_s`` (``(D, K)``).

    ``lam = reg * trace(K) / n``; the solve runs in float64 (the synthetic kernel is small and can be
    ill-conditioned), and gradients flow to ``psi_s``.
    """
    p = psi_s.double()
    k = p @ p.T
    lam = reg * k.diagonal().mean()
    alpha = torch.linalg.solve(k + lam * torch.eye(len(k), dtype=k.dtype, device=k.device), y_s.double())
    return (p.T @ alpha).to(psi_s.dtype)


def residual_rows(psi: torch.Tensor, y: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """Per-example rows ``[vec(psi e^T), ||e||^2]`` with ``e = y - head^T psi`` (``(B, D*K + 1)``)."""
    e = y - psi @ head
    return torch.cat([(psi[:, :, None] * e[:, None, :]).flatten(1), (e * e).sum(1, keepdim=True)], 1)


def kernel_loss(head: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """The KRR loss from the per-class means of :func:`residual_rows` taken at ``head``'s value.

    Its value is the loss's and its gradient in ``head`` is the loss's (``-2 G``); ``head`` keeps
    its graph to the synthetic images.
    """
    g = means[:, :-1].mean(0).view_as(head)
    return means[:, -1].mean() - 2 * ((head - head.detach()) * g).sum()


def krr_loss(psi_s: torch.Tensor, y_s: torch.Tensor, psi_r: torch.Tensor, y_r: torch.Tensor,
             reg: float) -> torch.Tensor:
    """The KRR loss computed directly, example by example: ``mean_r ||y_r - W^T psi_r||^2``."""
    return ((y_r - psi_r @ krr_head(psi_s, y_s, reg)) ** 2).sum(1).mean()


def nngp_init_(net: nn.Module) -> nn.Module:
    """RFAD's initialisation: He-normal weights (``N(0, 2 / fan_in)``), biases ``N(0, 0.1^2)``."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / m.weight[0].numel()))
            if m.bias is not None:
                nn.init.normal_(m.bias, 0.0, 0.1)
    return net


class KernelMatching(Distiller):
    """The loop shared by the kernel engines: KRR on the synthetic set, scored on a real batch.

    Subclasses supply the features of each iteration (:meth:`features`) and may update their
    networks after the image step (:meth:`after_step`). The images are optimised with Adam.

    Args:
        iterations: outer iterations (one real batch, one image step each).
        batch_real: real images per class per iteration (128: RFAD's and FRePO's ~1,024-1,280 per batch).
        lr_img: Adam learning rate of the synthetic images (None: the engine's default).
        reg: ridge, relative to the mean diagonal of the synthetic kernel.
        **kwargs: see :class:`Distiller`; ``model_kwargs`` default to ``{"norm": "none"}`` for
            ``convnet`` (both papers' feature networks have no normalisation).
    """

    supports_privacy = True
    default_lr_img = 0.01
    default_reg = 1e-6

    def __init__(self, *, iterations: int = 1000, batch_real: int = 128, lr_img: float | None = None,
                 reg: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.model == "convnet":
            self.model_kwargs = {"norm": "none", **self.model_kwargs}
        self.iterations = int(iterations)
        self.batch_real = int(batch_real)
        self.lr_img = float(lr_img if lr_img is not None else self.default_lr_img)
        self.reg = float(reg if reg is not None else self.default_reg)
        if self.iterations < 0 or self.batch_real < 1 or self.lr_img <= 0 or self.reg <= 0:
            raise ConfigError(f"{self.name}: need iterations >= 0, batch_real >= 1, lr_img > 0 and reg > 0; got "
                              f"{self.iterations}, {self.batch_real}, {self.lr_img}, {self.reg}")

    def start(self, access: RealAccess, in_shape: torch.Size, num_classes: int) -> None:
        """Hook before the first iteration (FRePO builds its pool here); nothing by default."""

    def features(self, it: int, access: RealAccess, in_shape: torch.Size, num_classes: int,
                 gen: torch.Generator) -> FeatureFn:
        """The feature map of iteration ``it`` (the same one for the synthetic and the real images)."""
        raise NotImplementedError

    def after_step(self, syn: torch.Tensor, targets: torch.Tensor, classes: list[int], gen: torch.Generator) -> None:
        """Hook after each image step (FRePO trains its pool here); nothing by default."""

    def _distill(self, access: RealAccess, memory: Memory, classes: list[int], gen: torch.Generator,
                 callback: Callback | None) -> None:
        num_classes, k = access.real.num_classes, len(classes)
        in_shape = torch.Size(memory.image_shape)
        # class label -> its column among this run's classes; targets are one-hot minus 1/K (both papers)
        column = torch.full((num_classes,), -1, dtype=torch.long, device=self.device)
        column[torch.tensor(classes, device=self.device)] = torch.arange(k, device=self.device)
        cols = torch.tensor(classes, device=self.device)

        def targets(y: torch.Tensor) -> torch.Tensor:
            return F.one_hot(column[y.to(column.device)], k).float() - 1.0 / k

        def syn_targets() -> torch.Tensor:  # soft labels: their probabilities over this run's classes
            labels = memory.labels()
            return labels[:, cols] - 1.0 / k if labels.ndim == 2 else targets(labels)

        opt = torch.optim.Adam(self.param_groups(memory, self.lr_img), lr=self.lr_img)
        self.start(access, in_shape, num_classes)
        for it in progress(range(self.iterations), desc=f"{access.prefix}{self.name} {self._meta.get('dataset', '')}",
                           enabled=self.progress):
            feat = self.features(it, access, in_shape, num_classes, gen)
            syn, y_s = memory(), syn_targets()
            head = krr_head(feat(syn), y_s, self.reg)
            fixed = head.detach()

            def rows(x: torch.Tensor, y: torch.Tensor, feat=feat, fixed=fixed) -> torch.Tensor:
                return residual_rows(feat(x), targets(y).to(fixed.device), fixed)

            access.step()
            means = access.class_means(access.batch(classes), rows, classes)
            loss = kernel_loss(head, means)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.stats["kernel_loss"] = float(loss.detach())
            self.after_step(syn.detach(), y_s.detach(), classes, gen)
            if callback is not None:
                callback(it + 1, self.wrap(memory, num_classes))


@register_distiller("kip")
class KernelInducingPoints(KernelMatching):
    """Kernel inducing points with random features (RFAD, Loo et al., NeurIPS 2022).

    Each iteration draws ``n_models`` freshly initialised networks (He-normal weights, biases of
    std 0.1, no normalisation; :func:`nngp_init_`) and concatenates their embeddings ``phi``,
    scaled by ``1/sqrt(D)``: random features whose kernel ``2 phi phi^T + 0.01`` approximates
    the ConvNet's NNGP kernel (RFAD's). The synthetic images are the inducing points of a KRR on
    that kernel, fitted to a real batch. RFAD's learned labels, Platt loss and learned linear
    transform of the images are not used (hard labels, mean-squared loss).

    Args:
        n_models: random networks per iteration (RFAD: 8).
        lr_img: Adam learning rate of the images (default 0.01; RFAD: AdaBelief 0.001 over far more
            iterations).
        reg: ridge relative to the kernel's mean diagonal (RFAD's ``jit``: 0.005).
        **kwargs: see :class:`KernelMatching` (iterations, batch_real) and :class:`Distiller`. With
            ``network_fn`` its networks are used as they come (not re-initialised).
    """

    default_reg = 5e-3

    def __init__(self, *, n_models: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(n_models) < 1:
            raise ConfigError(f"kip: n_models must be at least 1, got {n_models}")
        self.n_models = int(n_models)

    def features(self, it: int, access: RealAccess, in_shape: torch.Size, num_classes: int,
                 gen: torch.Generator) -> FeatureFn:
        nets = []
        for m in range(self.n_models):
            net = self.make_network(in_shape, num_classes)
            if self.network_fn is None:
                nngp_init_(net)
            net = access.network(net, first=it == 0 and m == 0).eval()
            for p in net.parameters():
                p.requires_grad_(False)
            nets.append(net)

        def feat(x: torch.Tensor) -> torch.Tensor:
            phi = torch.cat([net.embed(x) for net in nets], 1)
            phi = phi * math.sqrt(2.0 / phi.shape[1])
            return torch.cat([phi, phi.new_full((len(phi), 1), 0.1)], 1)  # RFAD's kernel 2 phi phi^T + 0.01

        return feat
