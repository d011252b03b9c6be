"""Differentiable siamese augmentation (DSA, Zhao & Bilen 2021).

One call samples a transformation; the *same* parameters are applied to the real and
to the synthetic batch so that matching compares like with like, and every operation
is differentiable in the images. Parameters are drawn per *group* (e.g. per class):
all images of a group share one transformation, as in the reference code's siamese
mode; ``group`` = one per image gives independent augmentation for training.
Settings follow the reference ``ParamDiffAug``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from fedcl.errors import ConfigError

__all__ = ["DSA", "DSAParams", "default_strategy"]

OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")


def default_strategy(dataset: str) -> str:
    """No flip for digits (a flipped 2 is not a 2): the reference strategy per dataset."""
    digits = {"mnist", "digits", "svhn", "fashion_mnist"}
    return "color_crop_cutout_scale_rotate" if dataset in digits else "color_crop_cutout_flip_scale_rotate"


@dataclass
class DSAParams:
    """One sampled transformation: the operation and its per-group parameters."""

    op: str
    values: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class DSA:
    """Differentiable siamese augmentation.

    Args:
        strategy: operations joined by ``_`` (``color_crop_cutout_flip_scale_rotate``);
            each call picks one at random, as the reference's single-op mode does.
        scale: maximum scale ratio. rotate: maximum rotation in degrees.
        crop: maximum translation as a fraction of the size. cutout: cut square side ratio.
        brightness, saturation, contrast: colour jitter strengths.
    """

    strategy: str = "color_crop_cutout_flip_scale_rotate"
    scale: float = 1.2
    rotate: float = 15.0
    crop: float = 0.125
    cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5

    def __post_init__(self) -> None:
        self.ops = [op for op in self.strategy.split("_") if op]
        bad = [op for op in self.ops if op not in OPS]
        if bad or not self.ops:
            raise ConfigError(f"unknown DSA operation(s) {bad or self.strategy!r}; valid: {', '.join(OPS)}")

    def sample(self, groups: int, generator: torch.Generator | None = None) -> DSAParams:
        """Draw one operation and ``groups`` sets of its parameters (on the CPU)."""
        g = generator
        op = self.ops[int(torch.randint(len(self.ops), (1,), generator=g))]

        def u(*shape: int) -> torch.Tensor:
            return torch.rand(groups, *shape, generator=g)

        if op == "color":
            vals = {"b": (u() - 0.5) * self.brightness, "s": u() * self.saturation, "c": u() + self.contrast}
        elif op == "crop":
            vals = {"t": (u(2) * 2 - 1) * self.crop}
        elif op == "cutout":
            vals = {"center": u(2)}
        elif op == "flip":
            vals = {"flip": (u() < 0.5).float()}
        elif op == "scale":
            vals = {"s": u(2) * (self.scale - 1.0 / self.scale) + 1.0 / self.scale}
        else:  # rotate
            vals = {"theta": (u() - 0.5) * 2 * self.rotate / 180 * math.pi}
        return DSAParams(op, vals)

    def __call__(self, x: torch.Tensor, params: DSAParams, group: torch.Tensor | None = None) -> torch.Tensor:
        """Apply ``params`` to ``x``; ``group[i]`` says which parameter set image ``i`` uses."""
        n = x.shape[0]
        if group is None:
            group = torch.zeros(n, dtype=torch.long)
        v = {k: t.to(x.device)[group.to(x.device)] for k, t in params.values.items()}
        op = params.op
        if op == "color":
            x = x + v["b"].view(n, 1, 1, 1)
            m = x.mean(dim=1, keepdim=True)
            x = (x - m) * v["s"].view(n, 1, 1, 1) + m if x.shape[1] > 1 else x
            m = x.mean(dim=(1, 2, 3), keepdim=True)
            return (x - m) * v["c"].view(n, 1, 1, 1) + m
        if op == "flip":
            f = v["flip"].view(n, 1, 1, 1).to(x.dtype)
            return x * (1 - f) + x.flip(3) * f
        if op == "cutout":
            h, w = x.shape[2:]
            cy = (v["center"][:, 0] * h).view(n, 1, 1)
            cx = (v["center"][:, 1] * w).view(n, 1, 1)
            ys = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
            xs = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
            keep = ((ys - cy).abs() >= h * self.cutout / 2) | ((xs - cx).abs() >= w * self.cutout / 2)
            return x * keep.unsqueeze(1).to(x.dtype)
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        if op == "crop":
            h, w = x.shape[2:]
            # whole-pixel shifts, as the reference's integer translation
            theta[:, 0, 0] = 1
            theta[:, 1, 1] = 1
            theta[:, 0, 2] = torch.round(v["t"][:, 0] * w) * 2 / max(w - 1, 1)
            theta[:, 1, 2] = torch.round(v["t"][:, 1] * h) * 2 / max(h - 1, 1)
        elif op == "scale":
            theta[:, 0, 0] = v["s"][:, 0]
            theta[:, 1, 1] = v["s"][:, 1]
        else:  # rotate
            t = v["theta"]
            theta[:, 0, 0], theta[:, 0, 1] = torch.cos(t), torch.sin(-t)
            theta[:, 1, 0], theta[:, 1, 1] = torch.sin(t), torch.cos(t)
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        return F.grid_sample(x, grid, align_corners=True)

    def random(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment every image independently (used when training on synthetic sets)."""
        params = self.sample(x.shape[0], generator)
        return self(x, params, torch.arange(x.shape[0]))
