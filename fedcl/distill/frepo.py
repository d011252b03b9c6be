"""FRePO: neural feature regression with pooling (Zhou et al., NeurIPS 2022).

Kernel ridge regression of a real batch's labels on the synthetic set, under the features of a
network from a pool trained online on the synthetic set: only the linear head is solved in closed
form (the loss and its real-data side are :mod:`fedcl.distill.kernel`'s). Each iteration picks a
pool member at random, takes one image step on its features, then trains that member one step on
the synthetic set (mean-squared error on the same targets), or re-initialises it once it has taken
``max_online_updates`` steps; members start at staggered ages so the pool always holds networks
at every stage of training. The pool sees only the synthetic set, so under DP the release still
reads real data only through the access.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from fedcl.distill.access import RealAccess
from fedcl.distill.base import register_distiller
from fedcl.distill.kernel import FeatureFn, KernelMatching
from fedcl.errors import ConfigError

__all__ = ["FRePO"]


@register_distiller("frepo")
class FRePO(KernelMatching):
    """Neural feature regression with a pool of online-trained networks.

    Args:
        pool_size: networks in the pool (FRePO: 10).
        max_online_updates: steps a network is trained before it is re-initialised (FRePO: 100).
        lr_net: Adam learning rate of the pool's networks (FRePO: 0.0003).
        batch_syn: synthetic images per training step of a pool network (FRePO: up to 500).
        lr_img: Adam learning rate of the images (default 0.01; FRePO: LAMB 0.0003 with cosine
            decay over far more iterations).
        reg: ridge relative to the kernel's mean diagonal (FRePO: 1e-6).
        **kwargs: see :class:`~fedcl.distill.kernel.KernelMatching` (iterations, batch_real) and
            :class:`~fedcl.distill.Distiller`. FRePO's learned labels are not used (hard labels).
    """

    def __init__(self, *, pool_size: int = 10, max_online_updates: int = 100, lr_net: float = 3e-4,
                 batch_syn: int = 500, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(pool_size) < 1 or int(max_online_updates) < 1 or float(lr_net) <= 0 or int(batch_syn) < 1:
            raise ConfigError(f"frepo: need pool_size, max_online_updates, batch_syn >= 1 and lr_net > 0; got "
                              f"{pool_size}, {max_online_updates}, {batch_syn}, {lr_net}")
        self.pool_size, self.max_online_updates = int(pool_size), int(max_online_updates)
        self.lr_net, self.batch_syn = float(lr_net), int(batch_syn)
        self._pool: list[dict[str, Any]] = []
        self._current = 0

    def _member(self, access: RealAccess, in_shape: torch.Size, num_classes: int, age: int,
                first: bool = False) -> dict[str, Any]:
        net = access.network(self.make_network(in_shape, num_classes), first=first)
        return {"net": net, "opt": torch.optim.Adam(net.parameters(), lr=self.lr_net), "age": age}

    def start(self, access: RealAccess, in_shape: torch.Size, num_classes: int) -> None:
        """A fresh pool for each run, at staggered ages (as FRePO starts it)."""
        step = self.max_online_updates // self.pool_size
        self._pool = [self._member(access, in_shape, num_classes, step * i, first=i == 0)
                      for i in range(self.pool_size)]
        self._access, self._shape, self._num_classes = access, in_shape, num_classes

    def features(self, it: int, access: RealAccess, in_shape: torch.Size, num_classes: int,
                 gen: torch.Generator) -> FeatureFn:
        self._current = int(torch.randint(self.pool_size, (1,), generator=gen))
        net = self._pool[self._current]["net"].eval()
        for p in net.parameters():
            p.requires_grad_(False)

        def feat(x: torch.Tensor) -> torch.Tensor:
            phi = net.embed(x)
            return phi / math.sqrt(phi.shape[1])  # a fixed scale: KRR's predictions do not depend on it

        return feat

    def after_step(self, syn: torch.Tensor, targets: torch.Tensor, classes: list[int], gen: torch.Generator) -> None:
        member = self._pool[self._current]
        if member["age"] >= self.max_online_updates:
            self._pool[self._current] = self._member(self._access, self._shape, self._num_classes, 0)
            return
        net, opt = member["net"].train(), member["opt"]
        for p in net.parameters():
            p.requires_grad_(True)
        idx = torch.randperm(len(syn), generator=gen)[: self.batch_syn].to(syn.device)
        out = net(syn[idx])[:, torch.tensor(classes, device=syn.device)]
        loss = F.mse_loss(out, targets[idx], reduction="none").sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        member["age"] += 1
