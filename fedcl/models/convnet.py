"""The ConvNet of the DC/DSA/DM papers, plus MLP and LeNet."""

from __future__ import annotations

import torch
from torch import nn

from fedcl.models.layers import make_norm
from fedcl.models.registry import register_model


def default_depth(size: int) -> int:
    """3 blocks for 16 px and larger (28-32 px in the papers), 2 for 8 px, else 1."""
    return 3 if size >= 16 else 2 if size >= 8 else 1


class ConvNet(nn.Module):
    """``depth`` blocks of conv 3x3 -> norm -> ReLU -> 2x2 average pooling, then a linear layer.

    Args:
        in_shape: ``(C, H, W)``.
        num_classes: output size.
        width: channels of every conv layer (128 in the papers).
        depth: number of blocks; ``None`` picks it from the image size.
        norm: ``instancenorm`` (default, as in the papers), ``groupnorm``, ``batchnorm``, ``none``.
        first_padding: zero padding of the first convolution. The reference code of DC, DSA,
            DM, MTT and IDC pads 1-channel inputs by 3 there (28 px MNIST becomes 32 px: 2,048
            features instead of 1,152, about 1.3x the compute); ``first_padding=3`` builds that
            network, the default 1 keeps the size.
    """

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, width: int = 128,
                 depth: int | None = None, norm: str = "instancenorm", first_padding: int = 1) -> None:
        super().__init__()
        c, h, w = in_shape
        depth = default_depth(min(h, w)) if depth is None else depth
        layers: list[nn.Module] = []
        for d in range(depth):
            pad = int(first_padding) if d == 0 else 1
            layers += [nn.Conv2d(c, width, 3, padding=pad), make_norm(norm, width), nn.ReLU(inplace=True),
                       nn.AvgPool2d(2, 2)]
            c, h, w = width, (h + 2 * pad - 2) // 2, (w + 2 * pad - 2) // 2
        self.features = nn.Sequential(*layers)
        self.feature_dim = c * h * w
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features before the classifier."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class MLP(nn.Module):
    """Two hidden layers of ReLU units (128 each by default)."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, width: int = 128) -> None:
        super().__init__()
        c, h, w = in_shape
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, width), nn.ReLU(inplace=True),
                                  nn.Linear(width, width), nn.ReLU(inplace=True))
        self.feature_dim = width
        self.classifier = nn.Linear(width, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class LeNet(nn.Module):
    """LeNet-5 style: two conv 5x5 + max-pool blocks, then 120-84 fully connected."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c, h, w = in_shape
        pad = 2 if min(h, w) < 32 else 0
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=pad), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Conv2d(6, 16, 5, padding=pad), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Flatten(),
        )
        with torch.no_grad():
            n = self.features(torch.zeros(1, c, h, w)).shape[1]
        self.fc = nn.Sequential(nn.Linear(n, 120), nn.ReLU(inplace=True), nn.Linear(120, 84), nn.ReLU(inplace=True))
        self.feature_dim = 84
        self.classifier = nn.Linear(84, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@register_model("convnet")
def convnet(in_shape: tuple[int, int, int], num_classes: int, **kwargs: object) -> nn.Module:
    """The DC/DSA/DM ConvNet (width 128, instance norm, average pooling)."""
    return ConvNet(in_shape, num_classes, **kwargs)  # type: ignore[arg-type]


@register_model("mlp")
def mlp(in_shape: tuple[int, int, int], num_classes: int, **kwargs: object) -> nn.Module:
    """A 2-hidden-layer MLP."""
    return MLP(in_shape, num_classes, **kwargs)  # type: ignore[arg-type]


@register_model("lenet")
def lenet(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """LeNet-5."""
    return LeNet(in_shape, num_classes)
