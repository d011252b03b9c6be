"""The fast no-grad ConvNet forward computes the same function as ``net.embed`` (no timing asserted)."""

from __future__ import annotations

import pytest
import torch

from fedcl.distill import create_distiller
from fedcl.errors import ConfigError
from fedcl.models import create_model
from fedcl.models.fast import embed_no_grad, resolve_precision, supports_fast_embed


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 16, 16)])
@pytest.mark.parametrize("norm", ["instancenorm", "none"])
def test_fast_embed_matches_embed(shape: tuple[int, int, int], norm: str) -> None:
    torch.manual_seed(0)
    net = create_model("convnet", shape, 10, width=32, norm=norm)
    x = torch.randn(37, *shape)
    assert supports_fast_embed(net)
    with torch.no_grad():
        ref = net.embed(x)
    for chunk in (None, 8, "auto"):
        out = embed_no_grad(net, x, chunk=chunk)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_fast_embed_matches_embed_with_the_reference_first_padding() -> None:
    # first_padding=3 (the reference ConvNet on 28 px grey images) makes the first block's output
    # larger than its input; the few-channel fast path must use the output's size
    torch.manual_seed(2)
    net = create_model("convnet", (1, 28, 28), 10, width=16, first_padding=3)
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(embed_no_grad(net, x), net.embed(x), rtol=1e-4, atol=1e-4)


def test_fast_embed_negative_gamma_path() -> None:
    torch.manual_seed(1)
    net = create_model("convnet", (1, 28, 28), 10, width=16)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.uniform_(-1.0, 1.0)
                m.bias.uniform_(-0.5, 0.5)
        x = torch.randn(9, 1, 28, 28)
        torch.testing.assert_close(embed_no_grad(net, x), net.embed(x), rtol=1e-4, atol=1e-4)


def test_fast_embed_bf16_close_and_fallback() -> None:
    torch.manual_seed(2)
    net = create_model("convnet", (1, 28, 28), 10, width=32)
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        ref = net.embed(x)
    out = embed_no_grad(net, x, precision="bf16")
    assert out.dtype == torch.float32
    assert ((out - ref).norm() / ref.norm()) < 0.05
    other = create_model("convnet", (1, 28, 28), 10, width=16, norm="batchnorm").eval()
    assert not supports_fast_embed(other)
    with torch.no_grad():
        torch.testing.assert_close(embed_no_grad(other, x), other.embed(x))


def test_resolve_precision() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == torch.float32
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    assert resolve_precision("auto", cpu) in (torch.float32, torch.bfloat16)
    with pytest.raises(ConfigError):
        resolve_precision("fp8", cpu)


def test_dm_fast_path_same_result_as_plain() -> None:
    torch.manual_seed(0)
    x = torch.randn(120, 1, 8, 8)
    y = torch.arange(10).repeat_interleave(12)
    runs = []
    for fast in (True, False):
        eng = create_distiller("dm", iterations=3, batch_real=8, device="cpu", progress=False,
                               fast_embed=fast, model_kwargs={"width": 16})
        runs.append(eng.distill(x, y, 2, meta={"dataset": "digits"}).images)
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-3, atol=1e-3)


def test_dm_fast_embed_auto_picks_by_device() -> None:
    assert create_distiller("dm", device="cpu").fast_embed is True  # CPU: the fast path
    assert create_distiller("dm", device="cpu", fast_embed=False).fast_embed is False
    with pytest.raises(ConfigError, match="fast_embed"):
        create_distiller("dm", fast_embed="yes")


def test_dm_rejects_a_bad_embed_chunk() -> None:
    with pytest.raises(ConfigError, match="embed_chunk"):
        create_distiller("dm", embed_chunk=0)
