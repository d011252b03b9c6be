"""Kernel / meta-model matching engines (issue 29, item 2): kip (RFAD) and frepo."""

from __future__ import annotations

import pytest
import torch

from fedcl import create_distiller
from fedcl.distill.access import RealAccess
from fedcl.distill.base import ClassData
from fedcl.distill.kernel import kernel_loss, krr_head, krr_loss, nngp_init_, residual_rows
from fedcl.errors import ConfigError
from fedcl.models import create_model
from fedcl.privacy import PrivacyConfig

BASE = {"model_kwargs": {"width": 16}, "progress": False, "device": "cpu"}
TINY = {**BASE, "batch_real": 32}
OPTS = {"kip": {"iterations": 4, "n_models": 2}, "frepo": {"iterations": 4, "pool_size": 2, "max_online_updates": 2}}


@pytest.mark.parametrize("method", sorted(OPTS))
def test_kernel_engines_return_ipc_per_class_change_the_images_and_are_seeded(method, digits, digits_meta) -> None:
    x, y = digits.train_images, digits.train_labels
    init = create_distiller("random", seed=3, **BASE).distill(x, y, 2)
    a = create_distiller(method, seed=3, **TINY, **OPTS[method]).distill(x, y, 2, meta=digits_meta)
    b = create_distiller(method, seed=3, **TINY, **OPTS[method]).distill(x, y, 2, meta=digits_meta)
    c = create_distiller(method, seed=4, **TINY, **OPTS[method]).distill(x, y, 2, meta=digits_meta)
    assert a.images.shape == (20, 1, 8, 8) and a.class_counts() == [2] * 10
    assert a.meta["method"] == method and a.meta["privacy"] is None
    assert torch.isfinite(a.images).all()
    assert torch.equal(a.images, b.images)  # same seed, same set
    assert not torch.allclose(a.images, init.images)  # the real initialisation moved
    assert not torch.allclose(a.images, c.images)  # another seed, another set


def _setup(digits, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A random-feature map, synthetic images with a graph, and one exact real batch of digits."""
    torch.manual_seed(seed)
    net = nngp_init_(create_model("convnet", (1, 8, 8), 10, width=8, norm="none")).eval().to(dtype)
    for p in net.parameters():
        p.requires_grad_(False)

    def feat(x):
        return torch.cat([net.embed(x.to(dtype)), torch.ones(len(x), 1, dtype=dtype)], 1)

    classes = list(range(10))
    real = ClassData(digits.train_images, digits.train_labels, 10, torch.device("cpu"))
    access = RealAccess(real, classes, 24, torch.Generator().manual_seed(seed))  # 24 <= every class's size
    syn = real.sample(3, torch.Generator().manual_seed(seed + 1))[0].to(dtype).clone().requires_grad_(True)
    y_s = torch.nn.functional.one_hot(torch.arange(10).repeat_interleave(3), 10).to(dtype) - 0.1
    return feat, access, classes, syn, y_s


def test_moment_loss_equals_the_direct_krr_loss_in_value_and_gradient(digits) -> None:
    """The loss read as per-class means of per-example rows (the access's shape) is the KRR loss.

    In float64, so that the comparison tests the identity and not float32 rounding amplified by the
    ridge solve (in float32 the two paths differ by ~1e-6 of the largest gradient element).
    """
    f64 = torch.float64
    feat, access, classes, syn, y_s = _setup(digits, dtype=f64)
    access.step()
    batch = access.batch(classes)
    target = torch.nn.functional.one_hot(batch.labels, 10).to(f64) - 0.1

    head = krr_head(feat(syn), y_s, 1e-3)
    fixed = head.detach()
    means = access.class_means(batch, lambda x, y: residual_rows(feat(x), torch.nn.functional.one_hot(y, 10).to(f64)
                                                                 - 0.1, fixed), classes)
    assert means.dtype == f64  # the access averages float64 rows in float64
    moment = kernel_loss(head, means)
    (g_moment,) = torch.autograd.grad(moment, syn)

    direct = krr_loss(feat(syn), y_s, feat(batch.images), target, 1e-3)
    (g_direct,) = torch.autograd.grad(direct, syn)
    torch.testing.assert_close(moment, direct, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_moment, g_direct, rtol=1e-8, atol=1e-10 * float(g_direct.abs().max()))
    assert g_direct.abs().max() > 0


def test_kernel_engine_lowers_the_krr_loss(digits, digits_meta) -> None:
    """A few hundred kip steps lower the loss of a fixed random-feature KRR fitted on the set."""
    feat, access, classes, _, y_s = _setup(digits, seed=5)
    access.step()
    batch = access.batch(classes)
    target = torch.nn.functional.one_hot(batch.labels, 10).float() - 0.1
    eng = create_distiller("kip", seed=5, iterations=60, n_models=2, lr_img=0.05, **TINY)
    before = create_distiller("random", seed=5, **BASE).distill(digits.train_images, digits.train_labels, 3)
    after = eng.distill(digits.train_images, digits.train_labels, 3, meta=digits_meta)
    with torch.no_grad():
        lo = [float(krr_loss(feat(s.images), y_s, feat(batch.images), target, 5e-3)) for s in (before, after)]
    assert lo[1] < lo[0]


@pytest.mark.parametrize("method", sorted(OPTS))
def test_kernel_engines_run_under_dp_and_record_their_epsilon(method, digits, digits_meta) -> None:
    eng = create_distiller(method, seed=1, **TINY, **OPTS[method])
    syn = eng.distill(digits.train_images, digits.train_labels, 1, meta=digits_meta,
                      privacy=PrivacyConfig(epsilon=3.0))
    rec = syn.meta["privacy"]
    assert rec["steps"] == OPTS[method]["iterations"]
    assert 0 < rec["epsilon"] <= 3.0 + 1e-6
    assert syn.meta["init"] == "noise" and torch.isfinite(syn.images).all()


@pytest.mark.parametrize(("method", "bad"), [("kip", {"n_models": 0}), ("kip", {"reg": 0.0}),
                                             ("frepo", {"pool_size": 0}), ("kip", {"dsa": True})])
def test_kernel_engines_refuse_bad_options_in_one_line(method, bad) -> None:
    with pytest.raises(ConfigError) as err:
        create_distiller(method, **bad)
    assert "\n" not in str(err.value)
