"""Server-side selection of DP summaries by roughness (fedcl.federated.select)."""

from __future__ import annotations

import pytest
import torch

from fedcl.federated.select import roughness, select_summaries


def _group(noise: float, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    digit = torch.zeros(n, 1, 12, 12)
    digit[:, :, 3:9, 5:7] = 1.0  # a smooth stroke
    return digit + noise * torch.randn(digit.shape, generator=gen)


def test_roughness_grows_with_noise_and_is_zero_when_constant() -> None:
    assert roughness(torch.ones(3, 1, 8, 8)) == 0.0
    assert roughness(_group(0.1, 5, 0)) < roughness(_group(1.0, 5, 0)) < roughness(_group(3.0, 5, 0))


def test_select_drops_a_rough_holder_only_where_a_smooth_one_has_the_class() -> None:
    # class 0: owner 0 smooth, owner 1 rough; class 1: only owner 1, rough
    x = torch.cat([_group(0.2, 4, 1), _group(2.0, 4, 2), _group(2.0, 4, 3)])
    y = torch.tensor([0] * 8 + [1] * 4)
    owner = torch.tensor([0] * 4 + [1] * 8)
    keep = select_summaries(x, y, owner, max_ratio=3.0)
    assert keep.tolist() == [True] * 4 + [False] * 4 + [True] * 4  # class 1 keeps its only source
    assert select_summaries(x, y, owner, max_ratio=0).all()  # 0: off
    assert select_summaries(x, y, owner, max_ratio=1e6).all()
    with pytest.raises(ValueError, match="max_ratio"):
        select_summaries(x, y, owner, max_ratio=0.5)
