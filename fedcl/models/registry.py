"""Model registry: ``create_model(name, in_shape, num_classes, **kwargs)``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from fedcl.registry import Registry

__all__ = ["MODELS", "create_model", "list_models", "register_model"]

MODELS: Registry[nn.Module] = Registry("model")


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``fn(in_shape, num_classes, **kwargs) -> nn.Module`` under ``name``.

    Every model exposes ``embed(x)`` (features before the classifier) and ``classifier``.
    """
    return MODELS.register(name)


def list_models() -> list[str]:
    """Names of every registered model."""
    return MODELS.names()


def create_model(name: str, in_shape: Sequence[int], num_classes: int, **kwargs: object) -> nn.Module:
    """Build a freshly initialised network.

    Args:
        name: a registered name (``convnet``, ``mlp``, ``lenet``, ``resnet18``).
        in_shape: ``(C, H, W)`` of the input images.
        num_classes: output size.
        **kwargs: model options (``None`` values are dropped so defaults survive).

    Returns:
        An ``nn.Module`` with ``forward``, ``embed`` and ``classifier``.
    """
    c, h, w = (int(v) for v in in_shape)
    return MODELS.create(name, (c, h, w), int(num_classes), **kwargs)
