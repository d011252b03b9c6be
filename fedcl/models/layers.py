"""Normalisation layers shared by the networks."""

from __future__ import annotations

from torch import nn

from fedcl.errors import ConfigError

NORMS = ("instancenorm", "groupnorm", "batchnorm", "layernorm", "none")


def make_norm(norm: str, channels: int) -> nn.Module:
    """A 2-D normalisation layer by name.

    ``instancenorm`` is ``GroupNorm(C, C)`` as in the DC/DSA/DM reference code: it has no
    running statistics, so it behaves the same on one image as on a batch, and Opacus
    computes its per-sample gradients (unlike BatchNorm).
    """
    if norm == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "groupnorm":
        return nn.GroupNorm(min(32, channels), channels, affine=True)
    if norm == "layernorm":
        return nn.GroupNorm(1, channels, affine=True)
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
