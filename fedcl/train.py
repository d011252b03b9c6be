"""Train a model on tensors and measure its accuracy; shared by evaluation, continual and federated code."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fedcl.utils import resolve_device

__all__ = ["accuracy", "class_accuracy", "lr_decay_epoch", "predict", "train_model"]

Augment = Callable[[torch.Tensor], torch.Tensor]


def lr_decay_epoch(epochs: int) -> int | None:
    """The epoch from which :func:`train_model` (with ``lr_decay``) divides the learning rate by 10:
    half-way, or None for a single epoch, which it trains at the full rate."""
    return epochs // 2 if epochs > 1 else None


def train_model(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epochs: int, lr: float = 0.01,
                momentum: float = 0.9, weight_decay: float = 5e-4, batch_size: int = 256,
                augment: Augment | None = None, lr_decay: bool = True, generator: torch.Generator | None = None,
                device: torch.device | str | None = None) -> nn.Module:
    """Train ``model`` in place with SGD on in-memory tensors.

    Follows the DC/DSA/DM evaluation protocol by default: SGD with momentum 0.9 and
    weight decay 5e-4, learning rate divided by 10 at half the epochs.

    Args:
        model: the network (moved to ``device``).
        images, labels: the training set; labels are int64 class indices, or float
            ``(N, num_classes)`` soft labels.
        epochs: passes over the data.
        augment: a function applied to every minibatch (e.g. DSA), or None.
        lr_decay: divide the learning rate by 10 at half the epochs.
        generator: drives the shuffling.
        device: where to train; defaults to the model's device.

    Returns:
        The trained model (the same object).
    """
    device = resolve_device(device) if device is not None else next(model.parameters()).device
    model.to(device).train()
    x, y = images.to(device), labels.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    n = x.shape[0]
    decay_at = lr_decay_epoch(epochs) if lr_decay else None
    for epoch in range(epochs):
        if epoch == decay_at:
            for group in opt.param_groups:
                group["lr"] = lr * 0.1
        perm = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            xb = x[idx]
            if augment is not None:
                xb = augment(xb)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, *, batch_size: int = 1024,
            device: torch.device | str | None = None) -> torch.Tensor:
    """The class ``model`` predicts for each of ``images`` (a CPU tensor of ints), in eval mode.

    ``device`` (``auto``, ``cpu``, ``cuda``...; default: the model's) is where the model is moved
    and the batches run.
    """
    device = resolve_device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.to(device).eval()
    out = [model(images[start:start + batch_size].to(device)).argmax(1).cpu()
           for start in range(0, images.shape[0], batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 1024,
             device: torch.device | str | None = None) -> float:
    """Fraction of ``images`` that ``model`` classifies as ``labels`` (in [0, 1])."""
    pred = predict(model, images, batch_size=batch_size, device=device)
    return int((pred == labels.cpu()).sum()) / max(images.shape[0], 1)


def class_accuracy(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    """Per-class recall: for each class, the fraction of its examples predicted as that class
    (NaN for a class with no examples). Shows which classes a model trained on summaries misses."""
    labels = labels.cpu()
    hits = torch.bincount(labels[pred == labels], minlength=num_classes).double()
    totals = torch.bincount(labels, minlength=num_classes).double()
    return [float(h / t) if t > 0 else float("nan") for h, t in zip(hits[:num_classes], totals[:num_classes])]
