"""The evaluation protocol: train fresh models on a synthetic set, test them on real data."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from fedcl.data.base import ImageData
from fedcl.distill.augment import DSA, default_strategy
from fedcl.distill.synthetic import SyntheticSet
from fedcl.errors import DataError
from fedcl.models import create_model
from fedcl.train import accuracy, train_model
from fedcl.utils import resolve_device

__all__ = ["EvalResult", "evaluate_synthetic", "evaluate_tensors"]


@dataclass
class EvalResult:
    """Test accuracies of ``n_models`` fresh models (fractions in [0, 1])."""

    model: str
    accuracies: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies) if self.accuracies else float("nan")

    @property
    def std(self) -> float:
        return statistics.pstdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """``{mean, std, n_models, accuracies, model}`` for metrics.json."""
        return {"mean": self.mean, "std": self.std, "n_models": len(self.accuracies), **asdict(self)}


def evaluate_tensors(images: torch.Tensor, labels: torch.Tensor, data: ImageData, *, model: str = "convnet",
                     n_models: int = 5, epochs: int = 300, lr: float = 0.01, batch_size: int = 256,
                     dsa: bool = True, seed: int = 0, device: str | torch.device = "auto",
                     model_kwargs: dict[str, Any] | None = None) -> EvalResult:
    """Train ``n_models`` fresh networks on ``images``/``labels`` and test each on ``data``'s test set.

    Each model gets its own seed (``seed + i``); DSA augments every minibatch when ``dsa``.
    """
    dev = resolve_device(device)
    aug = DSA(default_strategy(data.name)) if dsa else None
    result = EvalResult(model)
    x, y = images.to(dev), labels.to(dev)
    for i in range(n_models):
        gen = torch.Generator().manual_seed(seed + i)
        torch.manual_seed(seed + i)
        net = create_model(model, data.image_shape, data.num_classes, **(model_kwargs or {})).to(dev)
        augment = (lambda xb, _g=gen: aug.random(xb, _g)) if aug else None
        train_model(net, x, y, epochs=epochs, lr=lr, batch_size=batch_size, augment=augment, generator=gen, device=dev)
        result.accuracies.append(accuracy(net, data.test_images, data.test_labels, device=dev))
    return result


def evaluate_synthetic(synthetic: SyntheticSet, data: ImageData, *, model: str = "convnet", n_models: int = 5,
                       epochs: int = 300, lr: float = 0.01, batch_size: int = 256, dsa: bool = True, seed: int = 0,
                       device: str | torch.device = "auto", model_kwargs: dict[str, Any] | None = None) -> EvalResult:
    """Evaluate a synthetic set by the DC/DSA/DM protocol.

    Args:
        synthetic: the set to evaluate.
        data: the real dataset whose test split measures accuracy.
        model: architecture of the fresh models (``convnet``, ``mlp`` ...).
        n_models: how many fresh models (mean ± std over them).
        epochs, lr, batch_size: SGD training (momentum 0.9, wd 5e-4, lr/10 at half).
        dsa: DSA augmentation during training (the DSA/DM protocol).
        seed: model ``i`` uses ``seed + i``.

    Returns:
        An :class:`EvalResult` with one accuracy per model.

    Raises:
        DataError: the set's image shape or classes do not fit ``data``.
    """
    if synthetic.image_shape != data.image_shape:
        raise DataError(f"synthetic images are {synthetic.image_shape}, but {data.name} images are {data.image_shape}")
    if synthetic.num_classes != data.num_classes:
        raise DataError(f"synthetic set has {synthetic.num_classes} classes, {data.name} has {data.num_classes}")
    return evaluate_tensors(synthetic.images, synthetic.labels, data, model=model, n_models=n_models, epochs=epochs,
                            lr=lr, batch_size=batch_size, dsa=dsa, seed=seed, device=device, model_kwargs=model_kwargs)
