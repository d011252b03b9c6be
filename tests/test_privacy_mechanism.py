"""DP mechanism and accounting: recorded epsilon, clipping, noise scale, reproduction, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import create_accountant

from fedcl import create_distiller, load_dataset
from fedcl.errors import PrivacyError
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
    kw = dict(iterations=4, batch_real=1000, dsa=False, seed=3, **TINY)
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


def test_clamp_keeps_dp_images_in_the_pixel_range(digits):
    # a huge image learning rate on a tiny owner: unclamped images leave the range, clamped ones never do
    meta = {"dataset": "digits", "mean": list(digits.mean), "std": list(digits.std)}
    lo = (0 - torch.tensor(digits.mean)) / torch.tensor(digits.std)
    hi = (1 - torch.tensor(digits.mean)) / torch.tensor(digits.std)
    x, y = digits.train_images[:200], digits.train_labels[:200]
    out = {}
    for clamp in (False, True):
        dist = create_distiller("dm", iterations=3, batch_real=8, lr_img=1e4, **TINY)
        out[clamp] = dist.distill(x, y, 1, meta=meta, privacy=PrivacyConfig(epsilon=1.0, delta=1e-3, clamp=clamp,
                                                                             replay=1)).images
    assert out[False].abs().max() > 2 * max(lo.abs().max(), hi.abs().max())
    assert (out[True] >= lo.min() - 1e-5).all() and (out[True] <= hi.max() + 1e-5).all()


def test_dp_never_starts_from_real_images(digits):
    dist = create_distiller("dm", iterations=1, batch_real=16, model_kwargs={"width": 8}, progress=False, init="real")
    with pytest.warns(UserWarning, match="init='real'"):
        syn = dist.distill(digits.train_images, digits.train_labels, 1, privacy=PrivacyConfig(epsilon=1.0))
    assert syn.meta["init"] == "noise"


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
    (PrivacyConfig(epsilon=1.0, downsample=0), "downsample"),
    (PrivacyConfig(epsilon=1.0, downsample=1.5), "downsample"),
    (PrivacyConfig(epsilon=1.0, subspace=-1), "subspace"),
    (PrivacyConfig(epsilon=1.0, subspace=4, subspace_below=2.5), "subspace_below"),
    (PrivacyConfig(epsilon=1.0, public="digits"), "subspace > 0"),
    (PrivacyConfig(epsilon=1.0, subspace=4, public="no-such-set"), "not a registered dataset"),
    (PrivacyConfig(epsilon=1.0, subspace=4, public="digits", public_fill=0.0), "public_fill"),
    (PrivacyConfig(epsilon=1.0, schedule="step"), "schedule"),
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


def test_replay_centering_pooling_read_real_data_only_in_the_private_steps(digits, monkeypatch):
    calls = []
    sample = GaussianMechanism.sample
    monkeypatch.setattr(GaussianMechanism, "sample", lambda self, n: calls.append(n) or sample(self, n))
    seen = []
    dist = create_distiller("dm", iterations=3, batch_real=8, **TINY)
    syn = dist.distill(digits.train_images, digits.train_labels, 1, callback=lambda it, s: seen.append(it),
                       privacy=PrivacyConfig(epsilon=2.0, replay=2, center=True, pool=True))
    assert len(calls) == 3  # one Poisson sample per private step; the 6 replay updates read none
    assert seen == list(range(1, 10))
    assert syn.meta["privacy"]["steps"] == 3
    assert torch.isfinite(syn.images).all()


def _roughness(x: torch.Tensor) -> float:
    return float((x[..., 1:, :] - x[..., :-1, :]).pow(2).mean() + (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean())


def test_downsampled_dp_images_are_smoother(digits):
    # the same private steps (same seeds, same noise), two parameterisations of the images
    x, y = digits.train_images[:600], digits.train_labels[:600]
    out = {}
    for name, extra in {"full": {}, "down2": {"downsample": 2}}.items():
        dist = create_distiller("dm", iterations=4, batch_real=16, lr_img=100.0, seed=1, **TINY)
        syn = dist.distill(x, y, 2, privacy=PrivacyConfig(epsilon=1.0, delta=1e-4, replay=1, **extra))
        assert syn.images.shape == (20, 1, 8, 8) and torch.isfinite(syn.images).all()
        assert syn.meta["privacy"]["steps"] == 4  # post-processing: the release is the same
        out[name] = syn.images
    assert _roughness(out["down2"]) < 0.5 * _roughness(out["full"])
    # downsample 2: every image is a bilinear upsampling of a 4 x 4 one (it lies in that map's range)
    basis = torch.eye(16).view(16, 1, 4, 4)
    up = torch.nn.functional.interpolate(basis, size=(8, 8), mode="bilinear").view(16, 64).T
    flat = out["down2"].view(20, 64).T
    assert torch.allclose(up @ torch.linalg.lstsq(up, flat).solution, flat, atol=1e-3 * flat.abs().max())
    full = out["full"].view(20, 64).T
    assert not torch.allclose(up @ torch.linalg.lstsq(up, full).solution, full, atol=1e-3 * full.abs().max())


def test_cosine_schedule_settles_the_images(digits):
    # the same private steps, two schedules: with cosine the last updates barely move the images
    x, y = digits.train_images[:600], digits.train_labels[:600]
    moves, final = {}, {}
    for schedule in ("constant", "cosine"):
        seen: list[torch.Tensor] = []
        dist = create_distiller("dm", iterations=4, batch_real=16, lr_img=100.0, seed=1, **TINY)
        syn = dist.distill(x, y, 2, callback=lambda it, s, seen=seen: seen.append(s.images.clone()),
                           privacy=PrivacyConfig(epsilon=1.0, delta=1e-4, replay=2, schedule=schedule))
        assert syn.meta["privacy"]["steps"] == 4 and len(seen) == 12  # post-processing: the release is the same
        moves[schedule] = [float((b - a).norm()) for a, b in zip(seen, seen[1:])]
        final[schedule] = syn.images
    assert moves["constant"][0] == pytest.approx(moves["cosine"][0], rel=0.05)  # both start at lr_img
    assert moves["cosine"][-1] < 0.1 * moves["constant"][-1]
    assert not torch.allclose(final["constant"], final["cosine"])


def test_downsample_needs_images():
    from fedcl.privacy.engines import _parameterise

    with pytest.raises(PrivacyError, match="needs images"):
        _parameterise(torch.zeros(4, 16), 2)
    with pytest.raises(PrivacyError, match="larger than the images"):
        _parameterise(torch.zeros(4, 1, 3, 3), 4)
    render, param = _parameterise(torch.randn(4, 1, 8, 8), 2)
    assert param.shape == (4, 1, 4, 4) and render(param).shape == (4, 1, 8, 8)


def test_subspace_basis_is_orthonormal_and_capped_by_rank():
    from fedcl.privacy.engines import _subspace

    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(6, 3, generator=gen) @ torch.randn(3, 40, generator=gen)  # 6 rows of rank 3 (centred: <= 3)
    basis = _subspace(emb, 16)
    assert basis.shape == (3, 40)  # capped by the rank of the centred rows, not by k
    assert torch.allclose(basis @ basis.T, torch.eye(3), atol=1e-5)
    centred = emb - emb.mean(0)
    assert torch.allclose(centred @ basis.T @ basis, centred, atol=1e-4)  # the rows lie in its span
    assert _subspace(emb, 2).shape == (2, 40)


def test_subspace_changes_the_images_not_the_release(digits):
    x, y = digits.train_images[:600], digits.train_labels[:600]  # about 60 images per class
    out = {}
    for name, extra in {"off": {}, "all": {"subspace": 4}, "none_small": {"subspace": 4, "subspace_below": 10},
                        "some_small": {"subspace": 4, "subspace_below": 60}}.items():
        dist = create_distiller("dm", iterations=3, batch_real=16, lr_img=100.0, seed=1, **TINY)
        syn = dist.distill(x, y, 2, privacy=PrivacyConfig(epsilon=1.0, delta=1e-4, replay=1, **extra))
        assert torch.isfinite(syn.images).all()
        out[name] = (syn.images, syn.meta["privacy"])
    for name in ("all", "none_small", "some_small"):
        assert out[name][1] == out["off"][1]  # same steps, sample rate, noise: a post-processing choice
    assert torch.equal(out["none_small"][0], out["off"][0])  # no class under the bound: nothing projected
    assert not torch.allclose(out["all"][0], out["off"][0])
    counts = torch.bincount(y, minlength=10)
    small = counts < 60
    assert small.any() and not small.all()
    rows = small[torch.arange(10).repeat_interleave(2)]  # the two images of each class
    some, off = out["some_small"][0], out["off"][0]
    assert not torch.allclose(some[rows], off[rows])  # the small classes were matched in the subspace


def test_public_images_take_the_private_layout():
    from fedcl.data import load_dataset
    from fedcl.privacy.public import public_images

    digits = load_dataset("digits")
    mean, std = (0.1307,), (0.3081,)
    x = public_images("digits", (1, 28, 28), mean, std, fill=20 / 28)
    assert x.shape == (len(digits.train_images), 1, 28, 28)
    pixels = x * std[0] + mean[0]
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5  # back in [0, 1] before the private normalisation
    assert torch.allclose(pixels[:, :, :4], torch.zeros(1), atol=1e-5)  # a black frame around a 20x20 box
    assert torch.allclose(pixels[:, :, :, -4:], torch.zeros(1), atol=1e-5)
    assert pixels[:, :, 4:24, 4:24].amax() > 0.5
    rgb = public_images("digits", (3, 16, 16), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert rgb.shape[1:] == (3, 16, 16) and torch.equal(rgb[:, 0], rgb[:, 2])


def test_a_public_basis_changes_the_images_not_the_release(digits):
    x, y = digits.train_images[:600], digits.train_labels[:600]
    meta = {"dataset": "digits", "mean": list(digits.mean), "std": list(digits.std)}
    out = {}
    for name, extra in {"synthetic": {"subspace": 4}, "public": {"subspace": 4, "public": "digits"}}.items():
        dist = create_distiller("dm", iterations=3, batch_real=16, lr_img=100.0, seed=1, **TINY)
        syn = dist.distill(x, y, 2, privacy=PrivacyConfig(epsilon=1.0, delta=1e-4, replay=1, **extra), meta=meta)
        assert torch.isfinite(syn.images).all()
        out[name] = (syn.images, syn.meta["privacy"])
    assert out["public"][1] == out["synthetic"][1]  # the basis is post-processing: same record
    assert not torch.allclose(out["public"][0], out["synthetic"][0])


def test_a_public_basis_spans_the_public_embeddings_about_the_reference():
    from fedcl.privacy.engines import _subspace

    torch.manual_seed(0)
    emb = torch.randn(5, 30) + 3.0  # far from the origin: the offset is a direction of its own
    basis = _subspace(emb, 10, centre=False)
    assert basis.shape == (5, 30)
    assert torch.allclose(emb @ basis.T @ basis, emb, atol=1e-4)
    assert _subspace(emb, 10).shape == (4, 30)  # centred, one direction fewer
