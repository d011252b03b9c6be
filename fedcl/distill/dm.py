"""Distribution matching (DM, Zhao & Bilen, WACV 2023).

Each iteration draws a freshly initialised network and matches, per class, the mean
embedding of a batch of real images with the mean embedding of the synthetic images
(optionally both under the same DSA transformation). All classes go through the
network in one batched forward pass; the real side runs under ``no_grad``.
"""

from __future__ import annotations

from typing import Any

import torch

from fedcl.distill.augment import DSA, default_strategy
from fedcl.distill.base import Callback, ClassData, Distiller, register_distiller
from fedcl.errors import ConfigError
from fedcl.models.fast import embed_no_grad, resolve_precision
from fedcl.privacy.config import PrivacyConfig
from fedcl.utils import progress

__all__ = ["DistributionMatching", "class_means"]


def class_means(emb: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Mean embedding of each class in ``classes`` (rows in that order)."""
    index = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long, device=emb.device)
    index[torch.tensor(classes, device=emb.device)] = torch.arange(len(classes), device=emb.device)
    rows = index[labels]
    sums = torch.zeros(len(classes), emb.shape[1], device=emb.device, dtype=emb.dtype).index_add_(0, rows, emb)
    counts = torch.bincount(rows, minlength=len(classes)).clamp_min(1).to(emb.dtype)
    return sums / counts[:, None]


@register_distiller("dm")
class DistributionMatching(Distiller):
    """Distribution matching.

    Args:
        iterations: outer iterations, one fresh network each (20,000 in the paper).
        batch_real: real images per class per iteration (256).
        lr_img: SGD learning rate of the synthetic images (1.0).
        momentum: SGD momentum of the synthetic images (0.5).
        dsa: apply the same DSA transformation to real and synthetic images.
        dsa_strategy: DSA operations; None picks the dataset's reference strategy.
        precision: compute dtype of the matching networks: ``fp32`` (default), ``bf16``, or
            ``auto`` (bf16 on CUDA and AMX CPUs; see :func:`fedcl.models.fast.resolve_precision`).
        fast_embed: embed the real batch with :func:`fedcl.models.fast.embed_no_grad` (same
            function, far less memory traffic on CPU); False uses ``net.embed``. ``auto``
            (default): the fast path on CPU, ``net.embed`` on CUDA, where cuDNN's kernels are
            faster (H100, MNIST ipc 10: 0.019 s/it against 0.035; experiments/results/distill.md).
        embed_chunk: images per chunk of that embedding: ``auto`` (default; 64 on CPU, the
            whole batch on CUDA), a positive integer, or None for one pass.
        **kwargs: see :class:`Distiller` (model, init, device, seed, progress ...).
    """

    supports_privacy = True

    def __init__(self, *, iterations: int = 1000, batch_real: int = 256, lr_img: float = 1.0, momentum: float = 0.5,
                 dsa: bool = True, dsa_strategy: str | None = None, precision: str = "fp32",
                 fast_embed: bool | str = "auto", embed_chunk: int | str | None = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.iterations = int(iterations)
        self.batch_real = int(batch_real)
        self.lr_img = float(lr_img)
        self.momentum = float(momentum)
        self.dsa = dsa
        self.dsa_strategy = dsa_strategy
        self.dtype = resolve_precision(precision, self.device)  # validates the name early
        self.precision = precision
        if not (isinstance(fast_embed, bool) or fast_embed == "auto"):
            raise ConfigError(f"fast_embed must be true, false or 'auto', got {fast_embed!r}")
        self.fast_embed = self.device.type != "cuda" if fast_embed == "auto" else fast_embed
        if not (embed_chunk is None or embed_chunk == "auto" or (isinstance(embed_chunk, int) and embed_chunk >= 1)):
            raise ConfigError(f"embed_chunk must be 'auto', None or a positive integer, got {embed_chunk!r}")
        self.embed_chunk = embed_chunk

    def _distill(self, real: ClassData, syn: torch.Tensor, syn_labels: torch.Tensor, classes: list[int],
                 gen: torch.Generator, privacy: PrivacyConfig | None, callback: Callback | None) -> torch.Tensor:
        # --- DP branch (owned by fedcl.privacy; the non-DP path below is untouched) ---
        if privacy is not None and privacy.enabled:
            from fedcl.privacy.engines import distill_dm_private

            return distill_dm_private(self, real, syn, syn_labels, classes, gen, privacy, callback)
        # --- end of DP branch ---
        aug = DSA(self.dsa_strategy or default_strategy(self._meta.get("dataset", ""))) if self.dsa else None
        syn = syn.detach().clone().requires_grad_(True)
        opt = torch.optim.SGD([syn], lr=self.lr_img, momentum=self.momentum)
        in_shape, num_classes = syn.shape[1:], real.num_classes
        # class label -> DSA parameter group (one siamese transformation per class)
        group = torch.zeros(num_classes, dtype=torch.long)
        group[torch.tensor(classes)] = torch.arange(len(classes))
        syn_group = group[syn_labels.cpu()]
        for it in progress(range(self.iterations), desc=f"dm {self._meta.get('dataset', '')}", enabled=self.progress):
            net = self.make_network(in_shape, num_classes)
            net.train()
            for p in net.parameters():
                p.requires_grad_(False)
            params = aug.sample(len(classes), gen) if aug else None
            xr, yr = real.sample(self.batch_real, gen, classes)
            real_group = group[yr.cpu()] if aug else None
            with torch.no_grad():
                xr = aug(xr, params, real_group) if aug else xr
                emb = embed_no_grad(net, xr, precision=self.dtype, chunk=self.embed_chunk) if self.fast_embed else net.embed(xr)
                target = class_means(emb.float(), yr, classes)
            xs = aug(syn, params, syn_group) if aug else syn
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                emb_syn = net.embed(xs)
            loss = ((class_means(emb_syn.float(), syn_labels, classes) - target) ** 2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if callback is not None:
                callback(it + 1, self.wrap(syn, syn_labels, num_classes))
        return syn.detach()
