"""ResNet-18 for small images: 3x3 stem, no max-pool (as in the DC reference code)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fedcl.models.layers import make_norm
from fedcl.models.registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = make_norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = make_norm(norm, cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), make_norm(norm, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.n1(self.conv1(x)))
        out = self.n2(self.conv2(out))
        return F.relu(out + self.short(x))


class ResNet18(nn.Module):
    """ResNet-18 (2-2-2-2 basic blocks, widths 64-512), adaptive average pooling at the end."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, norm: str = "instancenorm",
                 width: int = 64) -> None:
        super().__init__()
        c = in_shape[0]
        self.stem = nn.Sequential(nn.Conv2d(c, width, 3, 1, 1, bias=False), make_norm(norm, width), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        cin = width
        for i, mult in enumerate((1, 2, 4, 8)):
            cout = width * mult
            for j in range(2):
                blocks.append(BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1, norm))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.feature_dim = cin
        self.classifier = nn.Linear(cin, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@register_model("resnet18")
def resnet18(in_shape: tuple[int, int, int], num_classes: int, **kwargs: object) -> nn.Module:
    """ResNet-18 for small images (instance norm by default; ``norm=batchnorm`` for ResNet18BN)."""
    return ResNet18(in_shape, num_classes, **kwargs)  # type: ignore[arg-type]
