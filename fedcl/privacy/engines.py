"""The DP branches of the matching engines (``dm``, ``gm``, ``dsa``).

An engine's ``_distill`` hands over to these functions when it is given an enabled
privacy block; they run the engine's own loop with every real-data access replaced by
the :class:`~fedcl.privacy.mechanism.GaussianMechanism` (see that module for why the
result is (epsilon, delta)-DP and how classes compose). The non-DP code paths of the
engines are untouched. With ``noise_multiplier=0``, an infinite clipping bound and
``sample_rate=1``, these loops compute what the non-DP engines compute (tested).

Public API: :func:`plan_release` (the DPParams a run will have, computed before any data
is touched, e.g. for a :class:`~fedcl.privacy.ledger.PrivacyLedger` check),
:func:`distill_dm_private`, :func:`distill_gm_private`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from fedcl.distill.augment import DSA, default_strategy
from fedcl.errors import PrivacyError
from fedcl.privacy.accounting import DPParams, resolve_privacy
from fedcl.privacy.config import PrivacyConfig
from fedcl.privacy.mechanism import GaussianMechanism, bound_rows, private_network
from fedcl.utils import progress

if TYPE_CHECKING:
    from fedcl.distill.base import Callback, ClassData, Distiller

__all__ = ["distill_dm_private", "distill_gm_private", "plan_release"]

PUBLIC_BATCH = 512  # public images embedded per private step for ``privacy.public``'s basis


def _steps_per_iteration(engine: Distiller, ipc: int) -> int:
    """How many times one iteration queries each class (1 for dm; outer_loop for gm/dsa)."""
    if hasattr(engine, "outer_loop"):
        from fedcl.distill.gm import loops_for_ipc

        return int(engine.outer_loop or loops_for_ipc(ipc)[0])
    return 1


def plan_release(engine: Distiller, class_counts: Sequence[int], ipc: int, privacy: PrivacyConfig) -> DPParams:
    """The DP parameters ``engine`` will use on data with these class sizes (no data touched).

    The default sample rate is ``batch_real * K / N`` (K classes, N examples; capped at 1),
    the same for every class, so each class's expected batch is ``q * N_c`` (``batch_real``
    for balanced classes). Steps are ``iterations`` (times ``outer_loop`` for gm/dsa).

    Raises:
        PrivacyError: invalid privacy block, or a budget that cannot be reached.
    """
    counts = [int(c) for c in class_counts if int(c) > 0]
    n = sum(counts)
    q = min(1.0, getattr(engine, "batch_real", 256) * len(counts) / max(n, 1))
    steps = int(engine.iterations) * _steps_per_iteration(engine, ipc)
    return resolve_privacy(privacy, sample_rate=q, steps=steps, num_examples=n)


def _setup(engine: Distiller, real: ClassData, syn: torch.Tensor, classes: list[int], gen: torch.Generator,
           privacy: PrivacyConfig) -> tuple[GaussianMechanism, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plan, record, build the mechanism, and start from noise (never from real images)."""
    ipc = syn.shape[0] // len(classes)
    counts = real.counts[torch.tensor(classes)]
    params = plan_release(engine, counts.tolist(), ipc, privacy)
    engine.stats["privacy"] = params.as_dict()
    mech = GaussianMechanism(params, seed=engine.seed, secure_mode=privacy.secure_mode)
    if engine.init == "real":
        warnings.warn("DP: init='real' would copy real images into the synthetic set; starting from noise instead",
                      stacklevel=3)
        syn = torch.randn(syn.shape, generator=gen).to(syn.device)
        engine._meta["init"] = "noise"
    group = torch.zeros(real.num_classes, dtype=torch.long)
    group[torch.tensor(classes)] = torch.arange(len(classes))
    expected = params.sample_rate * counts.double()
    return mech, syn, group, expected


def _embed(net: torch.nn.Module, x: torch.Tensor, pool: bool) -> torch.Tensor:
    """``net.embed(x)``, or with ``pool`` the spatial mean of ``net.features(x)`` when it is a feature map."""
    if pool and hasattr(net, "features"):
        f = net.features(x)
        if f.dim() == 4:
            return f.mean((2, 3))
    return net.embed(x)


def _subspace(emb: torch.Tensor, k: int, *, centre: bool = True) -> torch.Tensor:
    """The top ``k`` principal directions of the rows of ``emb`` (about their mean with ``centre``,
    else about the origin), as an orthonormal ``(k', D)`` basis (``k'`` = ``k`` or the rank of
    those rows, whichever is smaller)."""
    centred = emb - emb.mean(0) if centre else emb
    _, sv, vh = torch.linalg.svd(centred, full_matrices=False)
    rank = int((sv > sv[0] * 1e-5).sum()) if len(sv) else 0
    return vh[:max(1, min(k, rank))]


def _public(engine: Distiller, privacy: PrivacyConfig, syn: torch.Tensor) -> torch.Tensor:
    """``privacy.public``'s images in the synthetic images' shape, normalisation and device."""
    from fedcl.privacy.public import public_images

    mean, std = engine._meta.get("mean"), engine._meta.get("std")
    if mean is None or std is None:
        raise PrivacyError("privacy.public needs the private dataset's mean and std in the metadata")
    return public_images(privacy.public, syn.shape[1:], mean, std, fill=privacy.public_fill).to(syn.device)


def _pixel_box(engine: Distiller, syn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-channel bounds of normalised pixels, ``((0 - mean) / std, (1 - mean) / std)``, from the metadata."""
    mean, std = engine._meta.get("mean"), engine._meta.get("std")
    if mean is None or std is None:
        warnings.warn("DP: clamp needs the dataset's mean and std in the metadata; images are not clamped",
                      stacklevel=3)
        return None
    shape = (1, -1) + (1,) * (syn.dim() - 2)
    m = torch.as_tensor(mean, dtype=syn.dtype, device=syn.device).reshape(shape)
    s = torch.as_tensor(std, dtype=syn.dtype, device=syn.device).reshape(shape)
    return -m / s, (1 - m) / s


def _parameterise(syn: torch.Tensor, factor: int) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """``(render, param)``: the synthetic images as ``render(param)``.

    ``factor`` 1: ``param`` is the images themselves. ``factor`` f > 1: ``param`` holds images
    ``f`` times smaller on each side (the average of each ``f x f`` block of ``syn``, times ``f``
    so that a noise start keeps unit variance), and ``render`` upsamples them bilinearly to
    the full size. The images then cannot carry detail finer than ``f`` pixels, which is where
    the noise of a small class's DP target would otherwise settle as texture.
    """
    if factor <= 1:
        return (lambda p: p), syn.clone()
    if syn.dim() != 4:
        raise PrivacyError(f"privacy.downsample={factor} needs images (N, C, H, W); got shape {tuple(syn.shape)}")
    size = tuple(syn.shape[2:])
    if min(size) < factor:
        raise PrivacyError(f"privacy.downsample={factor} is larger than the images ({size[0]}x{size[1]})")
    param = F.avg_pool2d(syn, factor, ceil_mode=True) * factor

    def render(p: torch.Tensor) -> torch.Tensor:
        return F.interpolate(p, size=size, mode="bilinear", align_corners=False)

    return render, param


def _image_schedule(opt: torch.optim.Optimizer, name: str, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    """``privacy.schedule``'s learning rate of the images over the ``total`` updates (private and replay).

    ``constant``: the engine's ``lr_img`` throughout. ``cosine``: from ``lr_img`` down to 0 along half
    a cosine, so that the last updates, each fitted to one noisy target, barely move the images and
    they settle where the average of all targets puts them. ``name`` is one of ``SCHEDULES``, as
    :func:`~fedcl.privacy.accounting.validate_privacy` checked before any data was read.
    """
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * t / total)))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0)


def distill_dm_private(engine: Distiller, real: ClassData, syn: torch.Tensor, syn_labels: torch.Tensor,
                       classes: list[int], gen: torch.Generator, privacy: PrivacyConfig,
                       callback: Callback | None) -> torch.Tensor:
    """Distribution matching where each class's real mean embedding is a DP noisy clipped mean.

    The synthetic embeddings are clipped (or, with ``privacy.normalize``, scaled) to the same
    bound (no noise: no real data), so both sides of the match live on the same scale. With
    ``privacy.replay`` the (network, augmentation, noisy target) triples of the private steps
    are kept and the images are updated ``replay`` more times against each of them: this only
    post-processes released values, so the privacy record is that of the private steps. With
    ``privacy.subspace`` the embeddings of the projected classes are matched in the top principal
    directions of the synthetic images' embeddings (a function of earlier releases only), or with
    ``privacy.public`` of public images' embeddings (Dosser's auxiliary data).
    """
    from fedcl.distill.dm import class_means

    mech, syn, group, expected = _setup(engine, real, syn, classes, gen, privacy)
    c_max = mech.params.max_grad_norm
    normalize = bool(privacy.normalize)  # with c_max = inf both bounds leave rows unchanged
    replay, pool = int(privacy.replay), bool(privacy.pool)
    aug = DSA(engine.dsa_strategy or default_strategy(engine._meta.get("dataset", ""))) if engine.dsa else None
    in_shape, num_classes = syn.shape[1:], real.num_classes
    render, param = _parameterise(syn.detach(), int(privacy.downsample))
    param.requires_grad_(True)
    opt = torch.optim.SGD([param], lr=engine.lr_img, momentum=engine.momentum)
    total = engine.iterations * (1 + replay)
    sched = _image_schedule(opt, str(privacy.schedule), total)
    syn_group = group[syn_labels.cpu()]
    dev_group = group.to(real.device)
    subspace, below = int(privacy.subspace), int(privacy.subspace_below)
    sizes = real.counts[torch.tensor(classes)].to(real.device)
    small = (sizes < below) if below > 0 else torch.ones_like(sizes, dtype=torch.bool)  # per group: projected
    syn_rows = syn_group.to(real.device)
    released: list[tuple[torch.nn.Module, object, torch.Tensor, torch.Tensor | float, torch.Tensor | None]] = []
    box = _pixel_box(engine, syn) if privacy.clamp else None
    public = _public(engine, privacy, syn) if subspace and privacy.public else None

    def project(emb: torch.Tensor, ref: torch.Tensor | float, proj: torch.Tensor | None,
                rows: torch.Tensor) -> torch.Tensor:
        """``emb - ref``, and for the rows of projected classes (``rows``: group per row), onto ``proj``."""
        emb = emb - ref
        return emb if proj is None else torch.where(small[rows][:, None], emb @ proj, emb)

    def update(net: torch.nn.Module, params: object, target: torch.Tensor, ref: torch.Tensor | float,
               proj: torch.Tensor | None) -> None:
        syn = render(param)
        xs = aug(syn, params, syn_group) if aug else syn
        emb_syn = bound_rows(project(_embed(net, xs, pool), ref, proj, syn_rows), c_max, normalize=normalize)
        loss = ((class_means(emb_syn, syn_labels, classes) - target) ** 2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if box is not None:
            with torch.no_grad():
                param.copy_(torch.maximum(torch.minimum(param, box[1]), box[0]))

    for it in progress(range(total), desc=f"dp-dm {engine._meta.get('dataset', '')}", enabled=engine.progress):
        if it < engine.iterations:  # a private step: the only place real data is read
            net = private_network(engine.make_network(in_shape, num_classes), warn=it == 0)
            net.train()
            for p in net.parameters():
                p.requires_grad_(False)
            params = aug.sample(len(classes), gen) if aug else None
            with torch.no_grad():  # centre and subspace come from the synthetic images only (no real data)
                syn = render(param)
                emb_s = _embed(net, aug(syn, params, syn_group) if aug else syn, pool)
                ref = emb_s.mean(0) if privacy.center else 0.0
                if public is not None:  # Dosser: the directions of public images about the reference
                    pub = public[torch.randperm(len(public), generator=gen)[:PUBLIC_BATCH].to(public.device)]
                    zero = torch.zeros(len(pub), dtype=torch.long)
                    emb_p = _embed(net, aug(pub, params, zero) if aug else pub, pool)
                    basis = _subspace(emb_p - ref, subspace, centre=False)
                else:
                    basis = _subspace(emb_s, subspace) if subspace else None
                proj = basis.T @ basis if basis is not None else None
            idx = mech.sample(len(real.labels)).to(real.device)
            xr, yr = real.images[idx], real.labels[idx]
            with torch.no_grad():
                if len(idx):
                    emb = project(_embed(net, aug(xr, params, group[yr.cpu()]) if aug else xr, pool), ref, proj,
                                  dev_group[yr])
                else:
                    emb = xr.new_zeros(0, emb_s.shape[1])
                target = mech.private_means(emb, dev_group[yr], expected, normalize=normalize)
                if proj is not None:  # post-processing: keep the noise of a projected class in the subspace
                    target = torch.where(small[:, None], target @ proj, target)
            if replay:
                released.append((net, params, target, ref, proj))
        else:  # replay: post-processing of the released targets, in a fresh random order each pass
            k = (it - engine.iterations) % engine.iterations
            if k == 0:
                order = torch.randperm(engine.iterations, generator=gen).tolist()
            net, params, target, ref, proj = released[order[k]]
        update(net, params, target, ref, proj)
        sched.step()
        if callback is not None:
            with torch.no_grad():
                callback(it + 1, engine.wrap(render(param), syn_labels, num_classes))
    with torch.no_grad():
        return render(param).detach()


def distill_gm_private(engine: Distiller, real: ClassData, syn: torch.Tensor, syn_labels: torch.Tensor,
                       classes: list[int], gen: torch.Generator, privacy: PrivacyConfig,
                       callback: Callback | None) -> torch.Tensor:
    """Gradient matching (DC/DSA) where each class's real gradient is a DP-SGD gradient.

    Per outer step, one Poisson sample of all real data is split by class; each class's
    per-sample gradients (Opacus ``GradSampleModule``) are clipped as one vector over all
    parameters, summed, noised and divided by the class's expected batch ``q * N_c``. The
    loop itself is the engine's :meth:`~fedcl.distill.gm.GradientMatching.match_loop`.
    """
    from fedcl.distill.gm import RealAccess

    mech, syn, _, expected = _setup(engine, real, syn, classes, gen, privacy)

    def sum_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, reduction="sum")

    class PrivateAccess(RealAccess):
        prefix = "dp-"

        def network(self, net: torch.nn.Module, it: int) -> torch.nn.Module:
            return private_network(net, warn=it == 0)

        def begin_step(self) -> None:
            self.idx = mech.sample(len(real.labels)).to(real.device)
            self.cls_of = real.labels[self.idx]

        def batch(self, ci: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
            sel = self.idx[self.cls_of == c]
            return real.images[sel], real.labels[sel]

        def gradient(self, net: torch.nn.Module, params: list[torch.nn.Parameter], x: torch.Tensor, y: torch.Tensor,
                     ci: int) -> list[torch.Tensor]:
            return mech.private_gradient(net, params, sum_ce, x, y, float(expected[ci]))

    return engine.match_loop(PrivateAccess(engine, real, gen), syn, syn_labels, classes, real.num_classes, gen,
                             callback)
