"""Trajectory matching (MTT, Cazenavette et al., CVPR 2022), optionally with TESLA's memory-constant gradient.

Experts are networks trained on the real data (:mod:`fedcl.distill.experts`, cached). Each
iteration picks an expert and a start epoch ``s <= max_start_epoch``; a student starts from the
expert's parameters at ``s``, takes ``syn_steps`` SGD steps on (minibatches of, DSA-augmented)
synthetic images with a learned step size, and the loss is how far it lands from the expert at
``s + expert_epochs``, normalised by how far the expert itself moved:
``||θ_N − θ*||² / ||θ_0 − θ*||²``. The images and the step size descend that loss.

The student is a pure function of a flat parameter vector (``torch.func.functional_call``), so
the unrolled steps are differentiable. ``tesla=True`` computes the *same* gradient without the
unrolled graph (Cui et al., ICML 2023): the forward pass keeps only each step's parameters,
minibatch indices and augmentation; the backward pass walks the steps in reverse, rebuilding one
step's graph at a time and carrying the adjoint ``a_t = a_{t+1} − α H_t a_{t+1}`` (one
Hessian-vector product per step), so the graph in memory is one step's, whatever ``syn_steps``.
(TESLA's published code drops the Hessian term; this keeps it, so the two modes agree exactly.)

Privacy: the experts are the only part that reads real data (the student steps and the loss see
the synthetic set and the expert parameters only). Under a privacy block they are trained with
DP-SGD through the run's private access (:mod:`fedcl.distill.experts`): the release is the experts'
training, ``num_experts * train_epochs`` epochs of Poisson-sampled steps at rate
``batch_real * K / N``, calibrated to ``privacy.epsilon`` and recorded step by step; the synthetic
set is post-processing of the noisy trajectories, and starts from noise. Cached DP experts are
keyed by their privacy parameters and seed (``expert_seed``), and a run that loads them reports
what their training spent. Soft labels are refused under DP (as for every engine).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fedcl.distill.access import RealAccess
from fedcl.distill.augment import DSA, DSAParams, default_strategy
from fedcl.distill.base import Callback, Distiller, register_distiller, sample_rate
from fedcl.distill.experts import Experts, expert_batch, make_spec, steps_per_epoch, train_experts_on
from fedcl.distill.memory import Memory
from fedcl.errors import ConfigError
from fedcl.utils import progress

__all__ = ["Step", "TrajectoryMatching", "match_trajectory"]

#: one student step: indices into the synthetic set and the DSA parameters applied to them (or None)
Step = tuple[torch.Tensor, DSAParams | None]


class _Student:
    """A network evaluated at a flat parameter vector (the experts' layout)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.names = [n for n, _ in net.named_parameters()]
        self.shapes = [p.shape for _, p in net.named_parameters()]
        self.sizes = [p.numel() for _, p in net.named_parameters()]
        self.num_params = sum(self.sizes)

    def __call__(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, self.sizes)
        params = {n: t.view(s) for n, t, s in zip(self.names, parts, self.shapes, strict=True)}
        return functional_call(self.net, params, (x,))

    def grad(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, create_graph: bool) -> torch.Tensor:
        """Gradient of the cross-entropy on ``(x, y)`` at ``flat``."""
        loss = F.cross_entropy(self(flat, x), y)
        return torch.autograd.grad(loss, flat, create_graph=create_graph)[0]


def match_trajectory(net: nn.Module, syn: torch.Tensor, labels: torch.Tensor, lr: torch.Tensor,
                     start: torch.Tensor, target: torch.Tensor, steps: Sequence[Step],
                     augment: Callable[[torch.Tensor, DSAParams], torch.Tensor] | None = None,
                     tesla: bool = False, label_grad: list[torch.Tensor] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The normalised trajectory-matching loss and its gradients in the images and the step size.

    Args:
        net: the architecture (its own parameters are not used: the student's are ``start``).
        syn: synthetic images ``(M, C, H, W)``; labels: their classes ``(M,)``.
        lr: the student's step size (a 0-d tensor).
        start, target: flat expert parameters at the start epoch and ``expert_epochs`` later.
        steps: the student's minibatches (indices into ``syn``) and their augmentation, in order.
        augment: ``augment(x, params)`` applies the step's augmentation (None: no augmentation).
        tesla: compute the gradients step by step in reverse (one step's graph in memory) instead of
            back-propagating through the unrolled steps; the result is the same up to rounding.
        label_grad: with soft labels (``labels`` float ``(M, K)`` probabilities), a list that receives
            the gradient in the labels.

    Returns:
        ``(loss, grad_images, grad_lr)``, all detached.
    """
    student = _Student(net)
    if start.numel() != student.num_params:
        raise ConfigError(f"expert parameters have {start.numel()} entries but the network has "
                          f"{student.num_params}; the experts were trained for another model")
    start, target = start.detach(), target.detach()
    dist = ((start - target) ** 2).sum()

    def inputs(x: torch.Tensor, p: DSAParams | None) -> torch.Tensor:
        return augment(x, p) if augment is not None and p is not None else x

    soft = label_grad is not None
    if not tesla:
        syn_ = syn.detach().requires_grad_(True)
        lr_ = lr.detach().requires_grad_(True)
        lab_ = labels.detach().requires_grad_(soft)
        theta = start.clone().requires_grad_(True)
        for idx, p in steps:
            theta = theta - lr_ * student.grad(theta, inputs(syn_[idx], p), lab_[idx], create_graph=True)
        loss = ((theta - target) ** 2).sum() / dist
        grads = torch.autograd.grad(loss, [syn_, lr_, lab_] if soft else [syn_, lr_])
        if soft:
            label_grad.append(grads[2])
        return loss.detach(), grads[0], grads[1]

    alpha = lr.detach()
    thetas = []
    theta = start.clone()
    for idx, p in steps:  # forward: no graph kept, only each step's parameters
        thetas.append(theta)
        g = student.grad(theta.requires_grad_(True), inputs(syn[idx].detach(), p), labels[idx], create_graph=False)
        theta = (theta.detach() - alpha * g).detach()
    loss = ((theta - target) ** 2).sum() / dist
    adj = 2 * (theta - target) / dist  # dL/dθ_N
    g_syn = torch.zeros_like(syn)
    g_lr = torch.zeros_like(alpha)
    g_lab = torch.zeros_like(labels, dtype=torch.float32) if soft else None
    for (idx, p), th in zip(reversed(steps), reversed(thetas), strict=True):
        th = th.detach().requires_grad_(True)
        x = syn[idx].detach().requires_grad_(True)
        y = labels[idx].detach().requires_grad_(soft)
        g = student.grad(th, inputs(x, p), y, create_graph=True)
        dot = (adj * g).sum()  # θ_{t+1} = θ_t − α g_t, so dL/dα += −a·g_t
        d = torch.autograd.grad(dot, [th, x, y] if soft else [th, x])
        g_lr -= dot.detach()
        g_syn.index_add_(0, idx.to(g_syn.device), -alpha * d[1])
        if g_lab is not None:
            g_lab.index_add_(0, idx.to(g_lab.device), -alpha * d[2])
        adj = adj - alpha * d[0]  # a_t = a_{t+1} (I − α H_t)
    if g_lab is not None:
        label_grad.append(g_lab)
    return loss.detach(), g_syn, g_lr


@register_distiller("mtt")
class TrajectoryMatching(Distiller):
    """Matching training trajectories (MTT), with a learned student step size.

    Defaults suit MNIST-scale data on a CPU (the reference trains 100 experts for 50 epochs
    and runs 5,000 iterations on a GPU). Under DP every expert step is a step of the release, so
    fewer experts and epochs mean less noise per step at the same epsilon.

    Args:
        iterations: outer iterations (one expert segment each).
        syn_steps: student SGD steps on the synthetic set per iteration (``N``).
        expert_epochs: how many expert epochs later the target is (``M``).
        max_start_epoch: the latest start epoch (inclusive); ``max_start_epoch + expert_epochs``
            must not exceed ``train_epochs``.
        num_experts: expert trajectories to train (or load from the cache).
        train_epochs: epochs each expert trains.
        lr_img: SGD learning rate of the synthetic images (momentum ``momentum``).
        lr_lr: SGD learning rate of the student's step size (momentum ``momentum``); 1e-7 as the
            reference at ipc 1 (on digits, 1e-5 sent the step size and the loss to NaN within 20 iterations).
        lr_teacher: the experts' SGD learning rate, and the initial student step size.
        momentum: momentum of the image and step-size optimisers (0.5, as the reference).
        batch_syn: synthetic images per student step; None: the whole set every step.
        batch_real: real images per class per expert SGD step; None: 256 in all (the reference's).
        dsa: DSA augmentation of the experts' minibatches and of every student step.
        dsa_strategy: DSA operations; None picks the dataset's reference strategy.
        tesla: TESLA's gradient: the same meta-gradient with one step's graph in memory.
        expert_seed: seed of the experts (separate from ``seed``, so distillation runs with
            different seeds share one cached set of experts); under DP it also seeds their sampling
            and noise.
        cache_dir: the expert cache; None: ``$FEDCL_CACHE/experts`` or ``~/.cache/fedcl/experts``.
        **kwargs: see :class:`Distiller` (model, model_kwargs, init, device, seed, progress).
    """

    supports_privacy = True

    def __init__(self, *, iterations: int = 500, syn_steps: int = 20, expert_epochs: int = 2,
                 max_start_epoch: int = 10, num_experts: int = 5, train_epochs: int = 15, lr_img: float = 100.0,
                 lr_lr: float = 1e-7, lr_teacher: float = 0.01, momentum: float = 0.5, batch_syn: int | None = None,
                 batch_real: int | None = None, dsa: bool = True, dsa_strategy: str | None = None,
                 tesla: bool = False, expert_seed: int = 0, cache_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.network_fn is not None:
            raise ConfigError("method 'mtt' trains its own experts on the registry model; network_fn is not supported")
        if min(iterations, syn_steps, expert_epochs, num_experts, train_epochs) < 1 or max_start_epoch < 0:
            raise ConfigError("mtt needs iterations, syn_steps, expert_epochs, num_experts, train_epochs >= 1 "
                              "and max_start_epoch >= 0")
        if max_start_epoch + expert_epochs > train_epochs:
            raise ConfigError(f"max_start_epoch + expert_epochs = {max_start_epoch + expert_epochs} exceeds "
                              f"train_epochs = {train_epochs}: the target epoch must exist in the trajectory")
        if batch_syn is not None and batch_syn < 1:
            raise ConfigError(f"batch_syn must be at least 1 (or unset), got {batch_syn}")
        if not (lr_img > 0 and lr_lr >= 0 and lr_teacher > 0):
            raise ConfigError(f"mtt needs lr_img > 0, lr_lr >= 0, lr_teacher > 0; got {lr_img}, {lr_lr}, {lr_teacher}")
        if dsa_strategy is not None:
            DSA(dsa_strategy)  # validates the operation names before any work
        self.iterations, self.syn_steps, self.expert_epochs = int(iterations), int(syn_steps), int(expert_epochs)
        self.max_start_epoch, self.num_experts, self.train_epochs = int(max_start_epoch), int(num_experts), int(train_epochs)
        self.lr_img, self.lr_lr, self.lr_teacher, self.momentum = float(lr_img), float(lr_lr), float(lr_teacher), float(momentum)
        self.batch_syn = batch_syn
        self.expert_batch_real = batch_real  # None: resolved per run from the number of classes
        self.dsa, self.dsa_strategy, self.tesla = bool(dsa), dsa_strategy, bool(tesla)
        self.expert_seed, self.cache_dir = int(expert_seed), cache_dir
        self.experts: Experts | None = None

    def release_plan(self, class_counts: Sequence[int], ipc: int) -> tuple[float, int]:
        """The DP-SGD experts' schedule: rate ``batch_real * K / N`` (capped at 1), and every step of
        every expert: ``num_experts * train_epochs * ceil(N / (batch_real * K))``."""
        counts = [int(c) for c in class_counts if int(c) > 0]
        batch = expert_batch(self.expert_batch_real, len(counts))
        steps = self.num_experts * self.train_epochs * steps_per_epoch(sum(counts), batch, len(counts))
        return sample_rate(batch, counts), steps

    @property
    def release_seed(self) -> int:
        """DP experts are sampled and noised from ``expert_seed``, so runs with other seeds share them."""
        return self.expert_seed

    def privacy_record(self, access: RealAccess) -> dict[str, Any] | None:
        """What the experts' training spent (recorded in their file, so loading them reports it too)."""
        if not access.private:
            return None
        assert self.experts is not None
        return dict(self.experts.meta["privacy_record"])

    def load_experts(self, access: RealAccess, classes: list[int]) -> Experts:
        """The experts for this run's data and settings: from the cache, or trained (and cached) now,
        with DP-SGD through ``access`` when it is private."""
        real = access.real
        planned = access.planned()
        privacy = None if planned is None else {**planned, "seed": self.release_seed}
        spec = make_spec(dataset=self._meta.get("dataset", ""), model=self.model, model_kwargs=self.model_kwargs,
                         in_shape=tuple(real.images.shape[1:]), num_classes=real.num_classes, classes=classes,
                         num_experts=self.num_experts, epochs=self.train_epochs, lr=self.lr_teacher, momentum=0.0,
                         weight_decay=0.0, batch_real=self.expert_batch_real, dsa=self.dsa, dsa_strategy=self.dsa_strategy,
                         seed=self.expert_seed, privacy=privacy)
        return train_experts_on(real, spec, device=self.device, cache_dir=self.cache_dir, progress=self.progress,
                                access=access if access.private else None)

    def _distill(self, access: RealAccess, memory: Memory, classes: list[int], gen: torch.Generator,
                 callback: Callback | None) -> None:
        t0 = time.perf_counter()
        experts = self.experts = self.load_experts(access, classes)
        self.stats["experts_seconds"] = time.perf_counter() - t0
        self._meta["experts"] = {"file": experts.path.name, "key": experts.meta["key"], "source": experts.source,
                                 "num_experts": experts.num_experts, "epochs": experts.epochs,
                                 "private": access.private}
        num_classes = access.real.num_classes
        # the student has the experts' architecture (under DP, as the private access made it)
        net = access.network(self.make_network(memory.image_shape, num_classes))
        aug = DSA(self.dsa_strategy or default_strategy(self._meta.get("dataset", ""))) if self.dsa else None

        def augment(x: torch.Tensor, p: DSAParams) -> torch.Tensor:
            return aug(x, p, torch.arange(x.shape[0])) if aug is not None else x  # one transformation per image

        syn_lr = torch.tensor(self.lr_teacher, device=self.device).requires_grad_(True)
        opt_img = self.optimizer(memory, self.lr_img, self.momentum)
        opt_lr = torch.optim.SGD([syn_lr], lr=self.lr_lr, momentum=self.momentum)
        n = len(memory.classes) * memory.per_class
        batch = min(self.batch_syn or n, n)
        for it in progress(range(self.iterations), desc=f"mtt {self._meta.get('dataset', '')}", enabled=self.progress):
            e = int(torch.randint(experts.num_experts, (1,), generator=gen))
            s = int(torch.randint(self.max_start_epoch + 1, (1,), generator=gen))
            start = experts.params(e, s).to(self.device)
            target = experts.params(e, s + self.expert_epochs).to(self.device)
            steps: list[Step] = []
            chunks: list[torch.Tensor] = []
            for _ in range(self.syn_steps):
                if not chunks:
                    chunks = list(torch.randperm(n, generator=gen).split(batch))
                idx = chunks.pop()
                steps.append((idx.to(self.device), aug.sample(len(idx), gen) if aug is not None else None))
            # the meta-gradient is taken in the decoded images (and soft labels), then pushed to what is stored
            syn, labels = memory(), memory.labels()
            label_grad: list[torch.Tensor] | None = [] if labels.is_floating_point() else None
            loss, g_syn, g_lr = match_trajectory(net, syn.detach(), labels.detach(), syn_lr, start, target, steps,
                                                 augment if aug is not None else None, tesla=self.tesla,
                                                 label_grad=label_grad)
            if not (torch.isfinite(loss) and torch.isfinite(g_lr) and torch.isfinite(g_syn).all()):
                raise ConfigError(f"mtt diverged at iteration {it + 1} (non-finite loss or gradient); "
                                  f"lower engine.lr_lr (now {self.lr_lr:g}) or lr_img (now {self.lr_img:g})")
            opt_img.zero_grad(set_to_none=True)
            outputs, grads = [syn], [g_syn]
            if label_grad:
                outputs.append(labels)
                grads.append(label_grad[0])
            torch.autograd.backward(outputs, grads)
            syn_lr.grad = g_lr
            opt_img.step()
            opt_lr.step()
            self.stats["loss"] = float(loss)
            self._meta["syn_lr"] = float(syn_lr.detach())
            if callback is not None:
                callback(it + 1, self.wrap(memory, num_classes))
        self._meta["syn_lr"] = float(syn_lr.detach())
