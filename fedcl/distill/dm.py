"""Distribution matching (DM, Zhao & Bilen, WACV 2023).

Each iteration draws a freshly initialised network and matches, per class, the mean
embedding of a batch of real images with the mean embedding of the synthetic images
(optionally both under the same DSA transformation). All classes go through the
network in one batched forward pass; the real side runs under ``no_grad``.

The real means come from the engine's access (:mod:`fedcl.distill.access`): exact, or under
DP noisy means of clipped (by default unit-norm, centred) embeddings; then the synthetic
embeddings get the same bound, and with ``privacy.replay`` the released (network,
augmentation, target) triples are matched again after the last private step, which is
post-processing and reads no real data.
"""

from __future__ import annotations

from typing import Any

import torch

from fedcl.distill.access import RealAccess, class_means
from fedcl.distill.augment import DSA, default_strategy
from fedcl.distill.base import Callback, Distiller, register_distiller
from fedcl.distill.memory import Memory
from fedcl.errors import ConfigError
from fedcl.models.fast import embed_no_grad, resolve_precision
from fedcl.utils import progress

__all__ = ["DistributionMatching", "class_means"]


@register_distiller("dm")
class DistributionMatching(Distiller):
    """Distribution matching.

    Args:
        iterations: outer iterations, one fresh network each (20,000 in the paper).
        batch_real: real images per class per iteration (256).
        lr_img: SGD learning rate of the synthetic images; None (default): 1.0, and 100 under DP,
            where every real and synthetic embedding is scaled to the clipping bound (norm 1) and
            the loss is correspondingly small.
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
    #: the image learning rates without and with DP (see ``lr_img``)
    default_lr_img, dp_lr_img = 1.0, 100.0

    def __init__(self, *, iterations: int = 1000, batch_real: int = 256, lr_img: float | None = None,
                 momentum: float = 0.5,
                 dsa: bool = True, dsa_strategy: str | None = None, precision: str = "fp32",
                 fast_embed: bool | str = "auto", embed_chunk: int | str | None = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.iterations = int(iterations)
        self.batch_real = int(batch_real)
        self.lr_img = None if lr_img is None else float(lr_img)
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

    def _distill(self, access: RealAccess, memory: Memory, classes: list[int], gen: torch.Generator,
                 callback: Callback | None) -> None:
        aug = DSA(self.dsa_strategy or default_strategy(self._meta.get("dataset", ""))) if self.dsa else None
        lr = self.lr_img if self.lr_img is not None else (self.dp_lr_img if access.private else self.default_lr_img)
        opt = self.optimizer(memory, lr, self.momentum)
        in_shape, num_classes = memory.image_shape, access.real.num_classes
        syn_labels = memory.hard_labels.to(self.device)
        # class label -> DSA parameter group (one siamese transformation per class)
        group = torch.zeros(num_classes, dtype=torch.long)
        group[torch.tensor(classes)] = torch.arange(len(classes))
        syn_group = group[syn_labels.cpu()]
        fast = self.fast_embed and not access.private  # per-example contributions use the plain forward

        def match(net: torch.nn.Module, params: object, target: torch.Tensor, ref: torch.Tensor | None) -> None:
            syn = memory()
            xs = aug(syn, params, syn_group) if aug else syn
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                emb_syn = net.embed(xs)
            emb_syn = access.bound(emb_syn.float() if ref is None else emb_syn.float() - ref)
            loss = ((class_means(emb_syn, syn_labels, classes) - target) ** 2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        released: list[tuple[torch.nn.Module, object, torch.Tensor, torch.Tensor | None]] = []
        replay = access.replay
        total = self.iterations * (1 + replay)
        for it in progress(range(total), desc=f"{access.prefix}dm {self._meta.get('dataset', '')}",
                           enabled=self.progress):
            if it < self.iterations:  # a step that reads real data, through the access
                net = access.network(self.make_network(in_shape, num_classes), first=it == 0)
                net.train()
                for p in net.parameters():
                    p.requires_grad_(False)
                params = aug.sample(len(classes), gen) if aug else None
                ref = None
                if access.centred:  # the synthetic mean embedding: a function of earlier releases only
                    with torch.no_grad():
                        syn = memory()
                        ref = net.embed(aug(syn, params, syn_group) if aug else syn).mean(0)

                def rows(x: torch.Tensor, y: torch.Tensor, net=net, params=params, ref=ref) -> torch.Tensor:
                    x = aug(x, params, group[y.cpu()]) if aug else x
                    emb = (embed_no_grad(net, x, precision=self.dtype, chunk=self.embed_chunk) if fast
                           else net.embed(x))
                    return emb if ref is None else emb - ref

                access.step()
                target = access.class_means(access.batch(classes), rows, classes)
                if replay:
                    released.append((net, params, target, ref))
            else:  # replay: post-processing of the released targets, in a fresh random order each pass
                k = (it - self.iterations) % self.iterations
                if k == 0:
                    order = torch.randperm(self.iterations, generator=gen).tolist()
                net, params, target, ref = released[order[k]]
            match(net, params, target, ref)
            if callback is not None:
                callback(it + 1, self.wrap(memory, num_classes))
