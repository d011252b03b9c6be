"""Parameterised memories (param=images|idc|haba) and learned soft labels, for every matching engine."""

from __future__ import annotations

import json

import pytest
import torch

from fedcl.distill import SyntheticSet, create_distiller
from fedcl.distill.memory import create_memory, list_memories
from fedcl.errors import ConfigError, DataError
from fedcl.evaluate import evaluate_synthetic
from fedcl.privacy import PrivacyConfig

TINY = {"model_kwargs": {"width": 8}, "progress": False, "device": "cpu", "batch_real": 16}
ITER = {"dm": {"iterations": 2}, "gm": {"iterations": 1, "outer_loop": 2, "inner_loop": 1},
        "dsa": {"iterations": 1, "outer_loop": 2, "inner_loop": 1}, "kip": {"iterations": 2, "n_models": 1},
        "frepo": {"iterations": 2, "pool_size": 2},
        "mtt": {"iterations": 2, "num_experts": 1, "train_epochs": 2, "max_start_epoch": 1, "expert_epochs": 1,
                "syn_steps": 2, "lr_img": 1000.0}}


def test_every_memory_decodes_differentiably_within_its_budget() -> None:
    images = torch.randn(3 * 2, 1, 8, 8)
    for name, kw in {"images": {}, "idc": {"factor": 2}, "haba": {"hallucinators": 2, "hidden": 2}}.items():
        memory = create_memory(name, [0, 3, 5], 2, (1, 8, 8), images, **kw)
        decoded = memory()
        assert decoded.shape == (3 * memory.per_class, 1, 8, 8)
        assert memory.stored_numel() <= memory.budget_numel()
        assert memory.hard_labels.tolist() == [c for c in (0, 3, 5) for _ in range(memory.per_class)]
        decoded.sum().backward()
        assert all(p.grad is not None for p in memory.image_parameters())
    assert create_memory("idc", [0], 2, (1, 8, 8), factor=2).per_class == 8
    assert sorted(list_memories()) == ["haba", "idc", "images"]


def test_idc_tiles_upsample_to_the_stored_image_of_factor_one() -> None:
    images = torch.randn(4, 3, 8, 8)
    assert torch.equal(create_memory("idc", [0, 1], 2, (3, 8, 8), images, factor=1)(), images)
    tiled = create_memory("idc", [0, 1], 2, (3, 8, 8), images, factor=2)
    # a tile of a stored image decodes to an upsampled copy of that quarter
    quarter = tiled.images[0:1, :, :4, :4]
    up = torch.nn.functional.interpolate(quarter, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(tiled()[0:1], up)


def test_idc_starts_every_decoded_image_from_its_own_real_image(digits) -> None:
    # IDC's "mix" initialisation: at ipc 1 and factor 2 the four tiles of a class are four real images,
    # not one image repeated (which would leave four identical decoded images to start from)
    engine = create_distiller("gm", param="idc", param_kwargs={"factor": 2}, iterations=1, outer_loop=1,
                              inner_loop=0, lr_img=0.0, seed=3, **TINY)
    syn = engine.distill(digits.train_images, digits.train_labels, 1, meta={"dataset": "digits"})
    assert syn.memory.init_per_class == 4
    decoded = syn.images.reshape(10, 4, -1)
    for c in range(10):
        assert torch.cdist(decoded[c], decoded[c]).fill_diagonal_(1.0).min() > 0
    # fewer images than tiles (a class smaller than ipc * factor**2) are cycled
    few = create_memory("idc", [0, 1], 2, (1, 8, 8), torch.randn(2 * 3, 1, 8, 8), factor=2)
    assert few().shape == (2 * 8, 1, 8, 8)
    with pytest.raises(ConfigError, match="same number"):
        create_memory("idc", [0, 1], 1, (1, 8, 8), torch.randn(3, 1, 8, 8), factor=2)


@pytest.mark.parametrize("name, kw, match", [
    ("pixels", {}, "unknown memory parameterisation"),
    ("idc", {"factor": 3}, "factor=3 must be a positive integer that divides"),
    ("idc", {"factor": 0}, "factor=0"),
    ("haba", {"hallucinators": 40}, "raise ipc or lower"),
    ("haba", {"colour": 1}, "bad param_kwargs"),
])
def test_bad_memories_are_refused(name: str, kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create_memory(name, [0, 1], 1, (1, 8, 8), **kw)


@pytest.mark.parametrize("method", sorted(ITER))
@pytest.mark.parametrize("param, kw", [("idc", {"factor": 2}), ("haba", {"hallucinators": 2, "hidden": 2})])
def test_engines_optimise_any_memory(method: str, param: str, kw: dict, digits, tmp_path) -> None:
    engine = create_distiller(method, param=param, param_kwargs=kw, seed=1, **ITER[method], **TINY)
    x, y = digits.train_images[:300], digits.train_labels[:300]
    syn = engine.distill(x, y, 2, meta={"dataset": "digits"})
    memory = syn.memory
    assert memory is not None and syn.meta["memory"]["param"] == param
    assert len(syn) == 10 * memory.per_class and syn.class_counts() == [memory.per_class] * 10
    start = create_memory(param, list(range(10)), 2, (1, 8, 8), **kw)
    assert start.per_class == memory.per_class
    back = SyntheticSet.load(syn.save(tmp_path / "s.safetensors"))
    assert torch.allclose(back.images, syn.images, atol=1e-6) and torch.equal(back.labels, syn.labels)
    assert back.stored_bytes() == syn.stored_bytes() == 4 * memory.stored_numel()


def test_a_dp_release_plans_the_steps_of_the_decoded_images(digits) -> None:
    engine = create_distiller("gm", param="idc", param_kwargs={"factor": 2}, iterations=1, inner_loop=1, **TINY)
    syn = engine.distill(digits.train_images, digits.train_labels, 3, privacy=PrivacyConfig(epsilon=4.0))
    assert syn.meta["privacy"]["steps"] == 10  # 12 decoded images per class: the outer loop of ipc 10 (ipc 3: 1)


@pytest.mark.parametrize("method", ["gm", "kip", "mtt"])
def test_soft_labels_are_learned_stored_and_used(method: str, digits, tmp_path) -> None:
    kw = dict(soft_label_steps=5, lr_label=10.0, seed=2, **{**ITER[method], "iterations": 2}, **TINY)
    engine = create_distiller(method, soft_labels=True, **kw)
    x, y = digits.train_images[:300], digits.train_labels[:300]
    seen = []
    syn = engine.distill(x, y, 1, callback=lambda it, s: seen.append(s.labels.clone()))
    assert syn.soft and syn.labels.shape == (10, 10)
    assert torch.allclose(syn.labels.sum(1), torch.ones(10), atol=1e-5)
    assert not torch.allclose(seen[0], seen[-1])  # the loss sees the labels and moves them
    assert syn.meta["memory"]["soft_labels"] and syn.memory.stored_numel() == 10 * 64 + 10 * 10
    back = SyntheticSet.load(syn.save(tmp_path / "soft.safetensors"))
    assert torch.allclose(back.labels, syn.labels)
    res = evaluate_synthetic(syn, digits, n_models=1, epochs=2, device="cpu", model_kwargs={"width": 8})
    assert 0.0 <= res.mean <= 1.0


def test_soft_labels_refused_where_they_cannot_apply(digits) -> None:
    with pytest.raises(ConfigError, match="selects real images"):
        create_distiller("herding", soft_labels=True)
    with pytest.raises(ConfigError, match="selects real images: it stores them as param idc or images"):
        create_distiller("random", param="haba")
    engine = create_distiller("dm", soft_labels=True, iterations=1, **TINY)
    with pytest.raises(ConfigError, match="soft_labels under DP"):
        engine.distill(digits.train_images, digits.train_labels, 1, privacy=PrivacyConfig(epsilon=1.0))


def test_version_one_files_still_load_and_bad_memories_are_refused(tmp_path) -> None:
    from safetensors.torch import save_file

    save_file({"images": torch.zeros(2, 1, 4, 4), "labels": torch.tensor([0, 1])}, str(tmp_path / "v1.safetensors"),
              metadata={"format": "fedcl.synthetic/1", "num_classes": "2", "meta": json.dumps({"method": "dm"})})
    old = SyntheticSet.load(tmp_path / "v1.safetensors")
    assert old.memory is None and old.labels.tolist() == [0, 1]
    desc = create_memory("idc", [0, 1], 1, (1, 4, 4), factor=2).describe()
    save_file({"memory.images": torch.zeros(2, 1, 6, 6)}, str(tmp_path / "bad.safetensors"),
              metadata={"format": "fedcl.synthetic/2", "num_classes": "2", "meta": json.dumps({"memory": desc})})
    with pytest.raises(DataError, match="has shape"):
        SyntheticSet.load(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("method", ["random", "herding"])
def test_a_selection_fills_an_idc_memory_with_downsampled_real_images(digits, method) -> None:
    import torch.nn.functional as F

    opts = {"device": "cpu", "progress": False, "model_kwargs": {"width": 8}, "seed": 1}
    x, y = digits.train_images, digits.train_labels
    plain = create_distiller(method, **opts).distill(x, y, 4)
    tiled = create_distiller(method, param="idc", param_kwargs={"factor": 2}, **opts).distill(x, y, 1)
    # one stored image per class, four decoded: the same four picks, each down- and upsampled
    assert tiled.memory.stored()["images"].shape == (10, 1, 8, 8) and tiled.images.shape == plain.images.shape
    small = F.interpolate(plain.images, size=(4, 4), mode="bilinear", align_corners=False)
    expected = F.interpolate(small, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(tiled.images, expected, atol=1e-5)
    assert torch.equal(tiled.labels, plain.labels)
