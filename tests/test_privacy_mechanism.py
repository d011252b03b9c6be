"""DP mechanism and accounting: recorded epsilon, clipping, noise scale, reproduction, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import create_accountant

from fedcl import create_distiller, load_dataset
from fedcl.errors import ConfigError, PrivacyError
from fedcl.privacy import DPParams, GaussianMechanism, PrivacyConfig, clip_rows, resolve_privacy, validate_privacy

TINY = {"model_kwargs": {"width": 8}, "progress": False, "init": "noise"}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def params(nm=1.0, c=1.0, q=0.5, steps=10) -> DPParams:
    return DPParams(epsilon=1.0, delta=1e-5, noise_multiplier=nm, sample_rate=q, steps=steps, max_grad_norm=c,
                    accountant="rdp")


def test_recorded_epsilon_matches_opacus(digits):
    dist = create_distiller("dm", iterations=3, batch_real=16, **TINY)
    syn = dist.distill(digits.train_images, digits.train_labels, 1, privacy=PrivacyConfig(epsilon=2.0))
    rec = syn.meta["privacy"]
    assert set(rec) == {"epsilon", "delta", "noise_multiplier", "sample_rate", "steps", "max_grad_norm", "accountant"}
    assert rec["steps"] == 3 and rec["accountant"] == "rdp"
    assert rec["sample_rate"] == pytest.approx(16 * 10 / len(digits.train_labels))
    acc = create_accountant("rdp")
    acc.history = [(rec["noise_multiplier"], rec["sample_rate"], rec["steps"])]
    assert rec["epsilon"] == pytest.approx(acc.get_epsilon(delta=rec["delta"]), rel=1e-9)
    assert 2.0 - 0.05 <= rec["epsilon"] <= 2.0  # calibrated to the target, never above it


@pytest.mark.parametrize("accountant", ["prv", "gdp"])
def test_calibration_with_other_accountants(accountant):
    p = resolve_privacy(PrivacyConfig(epsilon=3.0, accountant=accountant), sample_rate=0.05, steps=200)
    acc = create_accountant(accountant)
    acc.history = [(p.noise_multiplier, 0.05, 200)]
    assert p.epsilon == pytest.approx(acc.get_epsilon(delta=1e-5), rel=1e-6)
    assert 3.0 - 0.05 <= p.epsilon <= 3.0


def test_noise_multiplier_given_gives_epsilon():
    p = resolve_privacy(PrivacyConfig(noise_multiplier=1.1), sample_rate=0.01, steps=1000)
    acc = create_accountant("rdp")
    acc.history = [(1.1, 0.01, 1000)]
    assert p.epsilon == pytest.approx(acc.get_epsilon(delta=1e-5))


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 20), dim=st.integers(1, 30), scale=st.floats(1e-3, 1e3), bound=st.floats(1e-2, 10.0))
def test_every_row_is_clipped(rows, dim, scale, bound):
    v = torch.randn(rows, dim, generator=torch.Generator().manual_seed(rows * 31 + dim), dtype=torch.float64) * scale
    out = clip_rows(v, bound)
    norms, before = out.norm(dim=1), v.norm(dim=1)
    assert bool((norms <= bound * (1 + 1e-6)).all())
    small = before <= bound * 0.99
    assert torch.allclose(out[small], v[small], rtol=1e-5)  # rows inside the ball are (almost) unchanged


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 12), bound=st.floats(1e-3, 5.0), seed=st.integers(0, 1000))
def test_per_sample_gradients_are_clipped(n, bound, seed):
    """Without noise, the released sum of n per-sample gradients has norm <= n * bound, each one clipped."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x, y = torch.randn(n, 1, 4, 4) * 10, torch.randint(0, 3, (n,))
    mech = GaussianMechanism(params(nm=0.0, c=bound))
    ps = list(net.parameters())

    def loss(logits, t):
        return torch.nn.functional.cross_entropy(logits, t, reduction="sum")

    g = mech.private_gradient(net, ps, loss, x[:1], y[:1], expected_size=1.0)
    full = torch.autograd.grad(loss(net(x[:1]), y[:1]), ps)
    flat, ref = torch.cat([t.flatten() for t in g]), torch.cat([t.flatten() for t in full])
    assert flat.norm() <= bound * (1 + 1e-4)
    assert torch.allclose(flat, ref * min(1.0, bound / float(ref.norm())), atol=1e-5)  # same direction, clipped
    g = mech.private_gradient(net, ps, loss, x, y, expected_size=1.0)
    assert float(torch.cat([t.flatten() for t in g]).norm()) <= n * bound * (1 + 1e-4)
    assert all(p.grad is None and not hasattr(p, "grad_sample") for p in ps)  # hooks and buffers removed


def test_noise_has_the_stated_scale():
    mech = GaussianMechanism(params(nm=2.0, c=0.5), seed=123)
    z = mech.noisy_class_sums(torch.zeros(0, 40_000), torch.zeros(0, dtype=torch.long), 1)
    assert mech.noise_std == 1.0
    assert float(z.mean()).__abs__() < 0.02
    assert float(z.std()) == pytest.approx(1.0, rel=0.02)


def test_poisson_sampling_rate():
    mech = GaussianMechanism(params(q=0.1), seed=0)
    sizes = [len(mech.sample(1000)) for _ in range(200)]
    assert sum(sizes) / len(sizes) == pytest.approx(100, rel=0.03)
    assert len(set(sizes)) > 5  # a random batch size, not a fixed one


def test_no_noise_no_clipping_reproduces_dm(digits):
    kw = dict(iterations=4, batch_real=1000, dsa=False, seed=3, lr_img=1.0, **TINY)
    plain = create_distiller("dm", **kw).distill(digits.train_images, digits.train_labels, 2)
    with pytest.warns(UserWarning, match="no noise"):
        dp = create_distiller("dm", **kw).distill(
            digits.train_images, digits.train_labels, 2,
            privacy=PrivacyConfig(noise_multiplier=0.0, max_grad_norm=math.inf, sample_rate=1.0, replay=0))
    assert dp.meta["privacy"]["epsilon"] == math.inf
    assert torch.allclose(plain.images, dp.images, atol=1e-4)
    # and real DP does change the result
    noisy = create_distiller("dm", **kw).distill(digits.train_images, digits.train_labels, 2,
                                                 privacy=PrivacyConfig(epsilon=1.0, sample_rate=1.0))
    assert not torch.allclose(plain.images, noisy.images, atol=1e-2)


def test_dp_never_starts_from_real_images(digits):
    dist = create_distiller("dm", iterations=1, batch_real=16, model_kwargs={"width": 8}, progress=False)
    syn = dist.distill(digits.train_images, digits.train_labels, 1, privacy=PrivacyConfig(epsilon=1.0))
    assert syn.meta["init"] == "noise"
    dist = create_distiller("dm", iterations=1, batch_real=16, model_kwargs={"width": 8}, progress=False, init="real")
    with pytest.raises(ConfigError, match="init='real'"):
        dist.distill(digits.train_images, digits.train_labels, 1, privacy=PrivacyConfig(epsilon=1.0))


def test_batchnorm_is_converted_and_reported(digits):
    dist = create_distiller("dm", iterations=1, batch_real=16, progress=False, init="noise",
                            model_kwargs={"width": 8, "norm": "batchnorm"})
    with pytest.warns(UserWarning, match="BatchNorm"):
        syn = dist.distill(digits.train_images, digits.train_labels, 1, privacy=PrivacyConfig(epsilon=1.0))
    assert torch.isfinite(syn.images).all()


@pytest.mark.parametrize("cfg, match", [
    (PrivacyConfig(epsilon=0.0), "epsilon"),
    (PrivacyConfig(epsilon=-1.0), "epsilon"),
    (PrivacyConfig(epsilon=1.0, delta=0.0), "delta"),
    (PrivacyConfig(epsilon=1.0, delta=1.0), "delta"),
    (PrivacyConfig(epsilon=1.0, delta=0.01), "1/N"),
    (PrivacyConfig(epsilon=1.0, max_grad_norm=0.0), "max_grad_norm"),
    (PrivacyConfig(epsilon=1.0, max_grad_norm=-2.0), "max_grad_norm"),
    (PrivacyConfig(noise_multiplier=-1.0), "noise_multiplier"),
    (PrivacyConfig(epsilon=1.0, noise_multiplier=1.0), "not both"),
    (PrivacyConfig(epsilon=1.0, accountant="moments"), "accountant"),
    (PrivacyConfig(epsilon=1.0, sample_rate=1.5), "sample_rate"),
    (PrivacyConfig(noise_multiplier=1.0, max_grad_norm=math.inf), "no clipping"),
    (PrivacyConfig(epsilon=1.0, replay=-1), "replay"),
    (PrivacyConfig(epsilon=1.0, replay=1.5), "replay"),
])
def test_bad_privacy_blocks_are_refused(cfg, match):
    with pytest.raises(PrivacyError, match=match):
        validate_privacy(cfg, num_examples=1000)


def test_bad_input_releases_nothing(digits):
    seen = []
    dist = create_distiller("dm", iterations=2, batch_real=16, **TINY)
    with pytest.raises(PrivacyError, match="delta"):
        dist.distill(digits.train_images, digits.train_labels, 1, privacy=PrivacyConfig(epsilon=1.0, delta=0.5),
                     callback=lambda it, s: seen.append(it))
    assert seen == [] and "privacy" not in dist.stats


def test_unreachable_budget_is_refused():
    with pytest.raises(PrivacyError, match="cannot reach"):
        resolve_privacy(PrivacyConfig(epsilon=1e-9), sample_rate=1.0, steps=10**6)


def test_secure_mode_needs_torchcsprng():
    try:
        import torchcsprng  # noqa: F401
    except ImportError:
        with pytest.raises(PrivacyError, match="torchcsprng"):
            GaussianMechanism(params(), secure_mode=True)


def test_no_noise_no_clipping_reproduces_gm(digits):
    kw = dict(iterations=1, batch_real=1000, outer_loop=1, seed=1, **TINY)
    x, y = digits.train_images[:200], digits.train_labels[:200]
    plain = create_distiller("gm", **kw).distill(x, y, 1)
    with pytest.warns(UserWarning, match="no noise"):
        dp = create_distiller("gm", **kw).distill(
            x, y, 1,
            privacy=PrivacyConfig(noise_multiplier=0.0, max_grad_norm=math.inf, sample_rate=1.0))
    assert torch.allclose(plain.images, dp.images, atol=1e-4)


def test_dp_dsa_records_outer_steps(digits):
    keep = digits.train_labels < 3
    dist = create_distiller("dsa", iterations=1, batch_real=8, outer_loop=3, inner_loop=1, **TINY)
    syn = dist.distill(digits.train_images[keep][:120], digits.train_labels[keep][:120], 2,
                       privacy=PrivacyConfig(noise_multiplier=1.0))
    assert syn.meta["privacy"]["steps"] == 3  # iterations * outer_loop: each outer step queries every class
    assert torch.isfinite(syn.images).all()


def test_per_sample_gradients_sum_to_the_batch_gradient_on_convnet(digits):
    """Guards against Opacus grad samplers that silently drop layers (hook mode did, for deeper convs)."""
    from fedcl import create_model
    from fedcl.privacy import private_network

    torch.manual_seed(0)
    net = private_network(create_model("convnet", digits.image_shape, 10, width=8))
    x, y = digits.train_images[:40], digits.train_labels[:40]
    ps = list(net.parameters())
    ref = torch.autograd.grad(torch.nn.functional.cross_entropy(net(x), y, reduction="sum"), ps)
    mech = GaussianMechanism(params(nm=0.0, c=math.inf, q=1.0))
    got = mech.private_gradient(net, ps, lambda lg, t: torch.nn.functional.cross_entropy(lg, t, reduction="sum"),
                                x, y, expected_size=1.0)
    for a, b in zip(ref, got, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-3)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 20), dim=st.integers(1, 30), scale=st.floats(0.1, 1e3), bound=st.floats(0.1, 10.0))
def test_normalized_rows_reach_the_bound_and_never_exceed_it(rows, dim, scale, bound):
    from fedcl.privacy.mechanism import normalize_rows

    v = torch.randn(rows, dim, generator=torch.Generator().manual_seed(rows * dim)) * scale
    norms = normalize_rows(v, bound).norm(dim=1)
    assert (norms <= bound * (1 + 1e-5)).all()
    assert torch.allclose(norms, torch.full_like(norms, bound), rtol=1e-3)


def test_replay_and_centering_read_real_data_only_in_the_private_steps(digits, monkeypatch):
    calls = []
    sample = GaussianMechanism.sample
    monkeypatch.setattr(GaussianMechanism, "sample", lambda self, n: calls.append(n) or sample(self, n))
    seen = []
    dist = create_distiller("dm", iterations=3, batch_real=8, **TINY)
    syn = dist.distill(digits.train_images, digits.train_labels, 1, callback=lambda it, s: seen.append(it),
                       privacy=PrivacyConfig(epsilon=2.0, replay=2, center=True))
    assert len(calls) == 3  # one Poisson sample per private step; the 6 replay updates read none
    assert seen == list(range(1, 10))
    assert syn.meta["privacy"]["steps"] == 3
    assert torch.isfinite(syn.images).all()
