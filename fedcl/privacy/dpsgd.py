"""The DP-SGD baseline: the same model trained directly on the real data with Opacus.

DP distillation is always compared with what a user would otherwise do: train the
evaluation model on the real data with Opacus's ``PrivacyEngine``
(``make_private_with_epsilon``: Poisson sampling, per-sample clipping, Gaussian noise)
at the same (epsilon, delta). A model with BatchNorm is converted with Opacus's
``ModuleValidator.fix`` (with a warning).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedcl.models import create_model
from fedcl.privacy.accounting import DPParams, compute_epsilon, validate_privacy
from fedcl.privacy.config import PrivacyConfig
from fedcl.privacy.mechanism import private_network
from fedcl.train import train_model
from fedcl.utils import resolve_device

__all__ = ["DPSGDResult", "train_dpsgd"]


@dataclass
class DPSGDResult:
    """A model trained with DP-SGD and its privacy record (None when trained without DP)."""

    model: nn.Module
    privacy: DPParams | None


def train_dpsgd(images: torch.Tensor, labels: torch.Tensor, num_classes: int, *, privacy: PrivacyConfig | None,
                model: str = "convnet", model_kwargs: dict[str, Any] | None = None, epochs: int = 15,
                batch_size: int = 256, lr: float = 0.1, momentum: float = 0.9, seed: int = 0,
                device: str | torch.device = "auto") -> DPSGDResult:
    """Train ``model`` on real data with DP-SGD (Opacus) at ``privacy``'s (epsilon, delta).

    Args:
        images, labels: the real training data.
        num_classes: classifier size.
        privacy: the privacy block; None or disabled trains without DP (same recipe, no noise).
        model, model_kwargs: the architecture (as in evaluation).
        epochs: passes over the data (Poisson batches of expected size ``batch_size``).
        batch_size: expected batch size; the sample rate is ``batch_size / N``.
        lr, momentum: SGD.
        seed: drives initialisation, sampling and noise.
        device: where to train.

    Returns:
        The trained model and the recorded DPParams (epsilon recomputed by the accountant).

    Raises:
        PrivacyError: invalid privacy block (checked before any data is touched).
    """
    dev = resolve_device(device)
    n = int(images.shape[0])
    dp = privacy is not None and privacy.enabled
    if dp:
        validate_privacy(privacy, num_examples=n)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = create_model(model, tuple(images.shape[1:]), num_classes, **(model_kwargs or {})).to(dev)
    if not dp:
        train_model(net, images, labels, epochs=epochs, lr=lr, momentum=momentum, weight_decay=0.0,
                    batch_size=batch_size, lr_decay=False, generator=gen, device=dev)
        return DPSGDResult(net, None)
    net = private_network(net)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    loader = DataLoader(TensorDataset(images, labels), batch_size=min(batch_size, n), shuffle=True, generator=gen)
    engine = PrivacyEngine(accountant=privacy.accountant, secure_mode=privacy.secure_mode)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
        common = dict(module=net, optimizer=opt, data_loader=loader, max_grad_norm=privacy.max_grad_norm,
                      noise_generator=None if privacy.secure_mode else gen,
                      grad_sample_mode="functorch")  # see GaussianMechanism.private_gradient
        if privacy.noise_multiplier is not None:
            pnet, popt, ploader = engine.make_private(noise_multiplier=privacy.noise_multiplier, **common)
        else:
            pnet, popt, ploader = engine.make_private_with_epsilon(target_epsilon=privacy.epsilon,
                                                                    target_delta=privacy.delta, epochs=epochs,
                                                                    **common)
    pnet.train()
    for _ in range(epochs):
        for xb, yb in ploader:
            if len(xb) == 0:  # an empty Poisson batch: Opacus still takes a (noise-only) step
                popt.zero_grad(set_to_none=True)
                popt.step()
                continue
            xb, yb = xb.to(dev), yb.to(dev)
            popt.zero_grad(set_to_none=True)
            F.cross_entropy(pnet(xb), yb).backward()
            popt.step()
    (nm, q, steps), = [h for h in engine.accountant.history] or [(popt.noise_multiplier, 1 / len(loader), 0)]
    eps = compute_epsilon(nm, q, steps, privacy.delta, privacy.accountant)
    record = DPParams(epsilon=eps, delta=float(privacy.delta), noise_multiplier=float(nm), sample_rate=float(q),
                      steps=int(steps), max_grad_norm=float(privacy.max_grad_norm), accountant=privacy.accountant)
    return DPSGDResult(pnet._module.eval(), record)
