"""Engines: the Distiller contract over the whole registry, DSA, distances, selection, SyntheticSet files."""

from __future__ import annotations

import json

import pytest
import torch

from fedcl.distill import DSA, SyntheticSet, create_distiller, list_distillers
from fedcl.distill.gm import gradient_distance, loops_for_ipc
from fedcl.distill.select import herding, kcenter
from fedcl.errors import ConfigError, DataError

TINY = {"model_kwargs": {"width": 16}, "progress": False, "device": "cpu"}
ITER = {"dm": {"iterations": 3}, "gm": {"iterations": 1, "outer_loop": 2, "inner_loop": 1},
        "dsa": {"iterations": 1, "outer_loop": 2, "inner_loop": 1}, "herding": {"feature_epochs": 1},
        "kcenter": {"feature_epochs": 1},
        "mtt": {"iterations": 2, "num_experts": 1, "train_epochs": 2, "max_start_epoch": 1, "expert_epochs": 1,
                "syn_steps": 2}}
ITER.update({"kip": {"iterations": 2, "n_models": 1}, "frepo": {"iterations": 2, "pool_size": 2}})


@pytest.mark.parametrize("method", list_distillers())
def test_every_engine_returns_ipc_per_class(method, digits, digits_meta) -> None:
    eng = create_distiller(method, seed=1, **TINY, **ITER.get(method, {}))
    syn = eng.distill(digits.train_images, digits.train_labels, 2, meta=digits_meta)
    assert isinstance(syn, SyntheticSet)
    assert syn.images.shape == (20, 1, 8, 8) and syn.images.dtype == torch.float32
    assert syn.class_counts() == [2] * 10
    assert torch.isfinite(syn.images).all()
    assert syn.meta["method"] == method and syn.meta["ipc"] == 2 and syn.meta["dataset"] == "digits"
    assert "distill_seconds" in eng.stats


@pytest.mark.parametrize("method", ["dm", "gm"])
def test_matching_engines_change_the_images_and_are_seeded(method, digits, digits_meta) -> None:
    opts = {**TINY, **ITER[method]}
    init = create_distiller("random", seed=4, **TINY).distill(digits.train_images, digits.train_labels, 1)
    a = create_distiller(method, seed=4, **opts).distill(digits.train_images, digits.train_labels, 1, meta=digits_meta)
    b = create_distiller(method, seed=4, **opts).distill(digits.train_images, digits.train_labels, 1, meta=digits_meta)
    assert torch.allclose(a.images, b.images, atol=1e-5)  # same seed, same result
    assert torch.equal(init.images, create_distiller("random", seed=4, **TINY).distill(
        digits.train_images, digits.train_labels, 1).images)
    assert not torch.allclose(a.images, init.images)  # matching moved the real initialisation


def test_subset_of_classes_keeps_global_labels(digits) -> None:
    mask = digits.train_labels >= 7
    syn = create_distiller("dm", iterations=2, **TINY).distill(
        digits.train_images[mask], digits.train_labels[mask], 3, num_classes=10)
    assert syn.num_classes == 10 and sorted(set(syn.labels.tolist())) == [7, 8, 9]


def test_ipc_and_option_errors(digits) -> None:
    eng = create_distiller("dm", iterations=1, **TINY)
    with pytest.raises(ConfigError, match="at least 1"):
        eng.distill(digits.train_images, digits.train_labels, 0)
    with pytest.raises(ConfigError, match="smallest class"):
        eng.distill(digits.train_images, digits.train_labels, 10_000)
    with pytest.raises(ConfigError, match="valid options: .*iterations"):
        create_distiller("dm", no_such_option=3)
    with pytest.raises(ConfigError, match="valid: .*dm"):
        create_distiller("nope")
    with pytest.raises(ConfigError, match="init"):
        create_distiller("dm", init="zeros")


def test_noise_init_starts_from_noise(digits) -> None:
    syn = create_distiller("dm", iterations=0, init="noise", **TINY).distill(digits.train_images, digits.train_labels, 2)
    nearest = torch.cdist(syn.images.flatten(1), digits.train_images.flatten(1)).min()
    assert nearest > 1.0  # no synthetic image is a real one
    assert float(syn.images.std()) == pytest.approx(1.0, abs=0.3)


def test_dsa_is_siamese_and_differentiable() -> None:
    aug = DSA("color_crop_cutout_flip_scale_rotate")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 12, 12, requires_grad=True)
    for _ in range(20):
        p = aug.sample(1, g)
        y1, y2 = aug(x, p), aug(x.detach().clone(), p)
        assert torch.allclose(y1, y2)  # same parameters -> same transformation
        assert y1.shape == x.shape
    aug(x, aug.sample(1, g)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_dsa_flip_and_crop_are_exact() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    flip = DSA("flip")
    out = flip(x, flip.sample(1, torch.Generator().manual_seed(0)).__class__("flip", {"flip": torch.ones(1)}))
    assert torch.equal(out, x.flip(3))
    crop = DSA("crop")
    p = crop.sample(1)
    p.values["t"] = torch.tensor([[0.25, 0.0]])  # one pixel right of 4
    shifted = crop(x, p)
    assert torch.allclose(shifted[..., :, :3], x[..., :, 1:], atol=1e-5) or torch.allclose(shifted[..., :, 1:], x[..., :, :3], atol=1e-5)


def test_dsa_rejects_unknown_ops() -> None:
    with pytest.raises(ConfigError, match="unknown DSA"):
        DSA("color_blur")


def test_gradient_distance() -> None:
    g = [torch.randn(4, 3, 3, 3), torch.randn(4), torch.randn(10, 8)]
    assert float(gradient_distance(g, g)) == pytest.approx(0.0, abs=1e-4)
    opposite = [-t for t in g]
    assert float(gradient_distance(g, opposite)) == pytest.approx(2 * (4 + 10), rel=1e-4)  # biases skipped
    assert loops_for_ipc(1) == (1, 1) and loops_for_ipc(10) == (10, 50) and loops_for_ipc(15) == (10, 50)


def test_herding_and_kcenter() -> None:
    torch.manual_seed(0)
    feats = torch.randn(200, 5)
    h = herding(feats, 10)
    assert len(set(h.tolist())) == 10
    # herding's mean tracks the full mean better than a random pick, on average
    rand_err = torch.stack([(feats[torch.randperm(200)[:10]].mean(0) - feats.mean(0)).norm() for _ in range(50)]).mean()
    assert (feats[h].mean(0) - feats.mean(0)).norm() < rand_err
    k = kcenter(feats, 10)
    assert len(set(k.tolist())) == 10
    cover = torch.cdist(feats, feats[k]).min(1).values.max()
    rand_cover = torch.cdist(feats, feats[torch.randperm(200)[:10]]).min(1).values.max()
    assert cover <= rand_cover


def test_privacy_refused_by_selection_methods(digits) -> None:
    from fedcl.privacy.config import PrivacyConfig

    with pytest.raises(ConfigError, match="cannot be made differentially private"):
        create_distiller("random", **TINY).distill(digits.train_images, digits.train_labels, 1,
                                                   privacy=PrivacyConfig(epsilon=1.0))


def test_synthetic_set_round_trip(tmp_path) -> None:
    syn = SyntheticSet(torch.randn(6, 1, 8, 8), torch.tensor([0, 0, 1, 1, 2, 2]), 3,
                       {"method": "dm", "mean": [0.5], "std": [0.25], "privacy": {"epsilon": 1.0}})
    path = syn.save(tmp_path / "s.safetensors")
    back = SyntheticSet.load(path)
    assert torch.equal(back.images, syn.images) and torch.equal(back.labels, syn.labels)
    assert back.meta == syn.meta and back.num_classes == 3
    assert back.denormalized().min() >= 0 and back.denormalized().max() <= 1
    assert not list(tmp_path.glob(".tmp-*"))  # the atomic write left no temporary file


def test_synthetic_set_load_refuses_other_files(tmp_path) -> None:
    from safetensors.torch import save_file

    with pytest.raises(DataError, match="no such"):
        SyntheticSet.load(tmp_path / "missing.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00\x01 not a safetensors file")
    with pytest.raises(DataError, match="not a readable"):
        SyntheticSet.load(tmp_path / "garbage.safetensors")
    save_file({"images": torch.zeros(1, 1, 2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(DataError, match="not a fedcl synthetic set"):
        SyntheticSet.load(tmp_path / "other.safetensors")
    save_file({"images": torch.full((1, 1, 2, 2), float("nan")), "labels": torch.zeros(1, dtype=torch.long)},
              str(tmp_path / "nan.safetensors"), metadata={"format": "fedcl.synthetic/1", "num_classes": "2",
                                                            "meta": json.dumps({})})
    with pytest.raises(DataError, match="NaN"):
        SyntheticSet.load(tmp_path / "nan.safetensors")
    save_file({"images": torch.zeros(1, 1, 2, 2), "labels": torch.tensor([5])},
              str(tmp_path / "lab.safetensors"), metadata={"format": "fedcl.synthetic/1", "num_classes": "2"})
    with pytest.raises(DataError, match="labels outside"):
        SyntheticSet.load(tmp_path / "lab.safetensors")
