"""Trajectory matching: the expert cache (reuse, stale, corrupt), the engine, TESLA's gradient and memory."""

from __future__ import annotations

import json
import os

import pytest
import torch

from fedcl.cli import main
from fedcl.distill import DSA, create_distiller
from fedcl.distill.experts import load_experts, make_spec, train_experts
from fedcl.distill.mtt import match_trajectory
from fedcl.errors import ConfigError, DataError
from fedcl.models import create_model
from fedcl.privacy.config import PrivacyConfig

TINY = {"model_kwargs": {"width": 8}, "progress": False, "device": "cpu"}
EXPERTS = {"num_experts": 2, "epochs": 2, "model_kwargs": {"width": 8}, "device": "cpu"}
MTT = {"iterations": 3, "num_experts": 2, "train_epochs": 3, "max_start_epoch": 1, "expert_epochs": 2, "syn_steps": 3}


def experts(digits, cache, **kw):
    return train_experts(digits.train_images, digits.train_labels, dataset="digits", cache_dir=cache, **{**EXPERTS, **kw})


def test_experts_are_trained_once_then_loaded(digits, tmp_path) -> None:
    first = experts(digits, tmp_path)
    assert first.source == "trained" and first.path.parent == tmp_path and first.meta["key"] in first.path.name
    assert first.trajectories.shape[:2] == (2, 3) and not torch.equal(first.params(0, 0), first.params(0, 2))
    assert not torch.equal(first.params(0, 0), first.params(1, 0))  # independently initialised experts
    settings = first.meta["settings"]
    assert settings["dataset"] == "digits" and settings["lr"] == 0.01 and settings["momentum"] == 0.0
    assert settings["augmentation"] == "color_crop_cutout_scale_rotate" and settings["model_kwargs"] == {"width": 8}
    assert first.meta["format"] == "fedcl.experts/1" and len(first.meta["data_hash"]) == 64
    stamp = first.path.stat().st_mtime_ns
    second = experts(digits, tmp_path)
    assert second.source == "cache" and second.path == first.path and first.path.stat().st_mtime_ns == stamp
    assert torch.equal(second.trajectories, first.trajectories)
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # no temporary file left behind


def test_other_settings_or_data_train_into_another_file(digits, tmp_path) -> None:
    first = experts(digits, tmp_path)
    stamp = first.path.stat().st_mtime_ns
    longer = experts(digits, tmp_path, epochs=3)
    other_data = train_experts(digits.train_images[:-1], digits.train_labels[:-1], dataset="digits",
                               cache_dir=tmp_path, **EXPERTS)
    assert longer.source == other_data.source == "trained"
    assert len({first.path, longer.path, other_data.path}) == 3
    assert first.path.stat().st_mtime_ns == stamp and experts(digits, tmp_path).source == "cache"


def test_a_stale_file_is_never_loaded(digits, tmp_path) -> None:
    first = experts(digits, tmp_path)
    longer = experts(digits, tmp_path, epochs=3)
    os.replace(longer.path, first.path)  # the expected name now holds other settings' trajectories
    with pytest.raises(DataError, match="stale"):
        experts(digits, tmp_path, allow_training=False)
    with pytest.warns(UserWarning, match="stale"):
        again = experts(digits, tmp_path)
    assert again.source == "trained" and torch.equal(again.trajectories, first.trajectories)


@pytest.mark.parametrize("damage", ["garbage", "flip"])
def test_a_corrupt_file_is_refused_in_one_line_or_trained_again(digits, tmp_path, damage) -> None:
    first = experts(digits, tmp_path)
    raw = bytearray(first.path.read_bytes())
    if damage == "garbage":
        raw = raw[: len(raw) // 2]  # truncated
    else:
        raw[-5] ^= 0xFF  # one byte of the parameters: the content hash no longer matches
    first.path.write_bytes(bytes(raw))
    with pytest.raises(DataError) as info:
        experts(digits, tmp_path, allow_training=False)
    assert "\n" not in str(info.value) and str(first.path) in str(info.value)
    with pytest.warns(UserWarning, match="training the experts again"):
        again = experts(digits, tmp_path)
    assert again.source == "trained" and torch.equal(again.trajectories, first.trajectories)
    assert experts(digits, tmp_path).source == "cache"


def test_a_missing_cache_is_refused_when_training_is_not_allowed(digits, tmp_path) -> None:
    with pytest.raises(DataError, match="no cached expert trajectories"):
        experts(digits, tmp_path, allow_training=False)
    assert list(tmp_path.iterdir()) == []


def test_wrong_shape_is_refused(digits, tmp_path) -> None:
    first = experts(digits, tmp_path)
    with pytest.raises(DataError, match="expected float32"):
        load_experts(first.path, make_spec(
            dataset="digits", model="convnet", model_kwargs={"width": 8}, in_shape=(1, 8, 8), num_classes=10,
            classes=range(10), num_experts=2, epochs=2, lr=0.01, momentum=0.0, weight_decay=0.0, batch_real=None,
            dsa=True, dsa_strategy=None, seed=0), first.meta["data_hash"], num_params=7)


def test_mtt_distils_changes_the_images_and_learns_its_step_size(digits, digits_meta, tmp_path) -> None:
    init = create_distiller("random", seed=2, **TINY).distill(digits.train_images, digits.train_labels, 2)
    eng = create_distiller("mtt", seed=2, cache_dir=str(tmp_path), **TINY, **MTT)
    syn = eng.distill(digits.train_images, digits.train_labels, 2, meta=digits_meta)
    assert syn.images.shape == (20, 1, 8, 8) and syn.class_counts() == [2] * 10
    assert torch.isfinite(syn.images).all() and not torch.allclose(syn.images, init.images)
    assert syn.meta["method"] == "mtt" and syn.meta["syn_lr"] != pytest.approx(0.01, abs=1e-9)
    assert syn.meta["experts"]["source"] == "trained" and syn.meta["experts"]["num_experts"] == 2
    # a second run loads the experts and gives the same set
    again = create_distiller("mtt", seed=2, cache_dir=str(tmp_path), **TINY, **MTT)
    syn2 = again.distill(digits.train_images, digits.train_labels, 2, meta=digits_meta)
    assert syn2.meta["experts"]["source"] == "cache" and syn2.meta["experts"]["key"] == syn.meta["experts"]["key"]
    assert torch.allclose(syn2.images, syn.images, atol=1e-6) and syn2.meta["syn_lr"] == pytest.approx(syn.meta["syn_lr"])
    # TESLA gives the same run up to float32 rounding
    tesla = create_distiller("mtt", seed=2, cache_dir=str(tmp_path), tesla=True, **TINY, **MTT)
    syn3 = tesla.distill(digits.train_images, digits.train_labels, 2, meta=digits_meta)
    assert torch.allclose(syn3.images, syn.images, atol=1e-4)


def _problem(digits, steps: int, batch: int = 7, width: int = 4, dtype=torch.float64,
             strategy: str = "color_crop_cutout_scale_rotate"):
    """A tiny matching problem: a ConvNet, 20 images, a start and a target, ``steps`` DSA-augmented minibatches."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = create_model("convnet", (1, 8, 8), 10, width=width).to(dtype)
    syn = digits.train_images[:20].to(dtype)
    labels = digits.train_labels[:20]
    start = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    target = start + 0.05 * torch.randn(start.shape, generator=gen, dtype=dtype)
    aug = DSA(strategy)
    plan = [(torch.randperm(20, generator=gen)[:batch], aug.sample(batch, gen)) for _ in range(steps)]
    lr = torch.tensor(0.05, dtype=dtype)
    return net, syn, labels, lr, start, target, plan, lambda x, p: aug(x, p, torch.arange(x.shape[0]))


def test_tesla_gradient_equals_the_unrolled_one(digits) -> None:
    args = _problem(digits, steps=4)
    loss_u, gx_u, glr_u = match_trajectory(*args, tesla=False)
    loss_t, gx_t, glr_t = match_trajectory(*args, tesla=True)
    assert gx_u.abs().sum() > 0 and (gx_u != 0).any(dim=(1, 2, 3)).sum() > 7  # several minibatches reached
    # float64: both are the exact meta-gradient, so they agree to rounding (tolerance 1e-9 relative)
    assert torch.allclose(loss_t, loss_u, rtol=1e-12)
    assert torch.allclose(gx_t, gx_u, rtol=1e-9, atol=1e-12 * gx_u.abs().max())
    assert torch.allclose(glr_t, glr_u, rtol=1e-9)


class SavedBytes:
    """Peak bytes of tensors held by live autograd graphs (what back-propagation keeps in memory)."""

    def __init__(self) -> None:
        self.live = self.peak = 0

    def pack(self, t: torch.Tensor) -> _Held:
        return _Held(t, self)

    @staticmethod
    def unpack(held: _Held) -> torch.Tensor:
        return held.t


class _Held:
    def __init__(self, t: torch.Tensor, owner: SavedBytes) -> None:
        self.t, self.owner, self.n = t, owner, t.numel() * t.element_size()
        owner.live += self.n
        owner.peak = max(owner.peak, owner.live)

    def __del__(self) -> None:
        self.owner.live -= self.n


def graph_peak(digits, steps: int, tesla: bool) -> int:
    counter = SavedBytes()
    # one DSA operation, so every step saves the same tensors and the peaks compare exactly
    args = _problem(digits, steps=steps, dtype=torch.float32, strategy="rotate")
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
        match_trajectory(*args, tesla=tesla)
    return counter.peak


def test_tesla_memory_does_not_grow_with_syn_steps(digits) -> None:
    unrolled = [graph_peak(digits, s, tesla=False) for s in (2, 6)]
    tesla = [graph_peak(digits, s, tesla=True) for s in (2, 6)]
    assert unrolled[1] > 2.5 * unrolled[0]  # the unrolled graph holds every step
    assert tesla[0] == tesla[1] and tesla[1] < unrolled[1] / 3


def dp_mtt(tmp_path, **kw):
    return create_distiller("mtt", cache_dir=str(tmp_path), **TINY, **{**MTT, "num_experts": 1, **kw})


def test_dp_trains_the_experts_with_dp_sgd_and_a_cached_release_reports_its_cost(digits, digits_meta, tmp_path) -> None:
    from fedcl.distill.experts import steps_per_epoch

    privacy = PrivacyConfig(epsilon=1.0)
    first = dp_mtt(tmp_path).distill(digits.train_images, digits.train_labels, 1, privacy=privacy, meta=digits_meta)
    p = first.meta["privacy"]
    n = len(digits.train_labels)
    batch = 256 // 10  # the experts' default: 256 images in all
    assert p["steps"] == 1 * MTT["train_epochs"] * steps_per_epoch(n, batch, 10)  # every step of its one expert
    assert p["sample_rate"] == pytest.approx(batch * 10 / n) and 0.9 < p["epsilon"] <= 1.0 and p["noise_multiplier"] > 1
    assert first.meta["init"] == "noise" and first.meta["experts"]["private"] and first.meta["experts"]["source"] == "trained"
    (file,) = tmp_path.iterdir()
    # another distillation seed post-processes the same DP experts: loaded, and the same cost reported
    again = dp_mtt(tmp_path, seed=3).distill(digits.train_images, digits.train_labels, 1, privacy=privacy, meta=digits_meta)
    assert again.meta["experts"]["source"] == "cache" and again.meta["experts"]["key"] == first.meta["experts"]["key"]
    assert again.meta["privacy"] == p and not torch.equal(again.images, first.images)
    # experts trained without DP, or under another budget, never share the DP file
    plain = dp_mtt(tmp_path).distill(digits.train_images, digits.train_labels, 1, meta=digits_meta)
    looser = dp_mtt(tmp_path).distill(digits.train_images, digits.train_labels, 1, meta=digits_meta,
                                      privacy=PrivacyConfig(epsilon=10.0))
    assert plain.meta["privacy"] is None and not plain.meta["experts"]["private"]
    assert plain.meta["experts"]["source"] == looser.meta["experts"]["source"] == "trained"
    assert len({first.meta["experts"]["key"], plain.meta["experts"]["key"], looser.meta["experts"]["key"]}) == 3
    assert looser.meta["privacy"]["noise_multiplier"] < p["noise_multiplier"]
    # DP experts whose file lost its privacy record are corrupt: refused, never loaded without their cost
    from safetensors.torch import load_file, save_file

    save_file(load_file(file), file, metadata={k: v for k, v in first_header(file).items() if k != "privacy_record"})
    with pytest.warns(UserWarning, match="without their privacy record"):
        dp_mtt(tmp_path).distill(digits.train_images, digits.train_labels, 1, privacy=privacy, meta=digits_meta)


def first_header(path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return dict(f.metadata())


@pytest.mark.parametrize(("opts", "message"), [({"init": "real"}, "init='real'"),
                                               ({"soft_labels": True}, "soft_labels under DP")])
def test_dp_refuses_what_would_leak_real_data_in_one_line(digits, tmp_path, opts, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        dp_mtt(tmp_path, **opts).distill(digits.train_images, digits.train_labels, 1, privacy=PrivacyConfig(epsilon=1.0))
    assert "\n" not in str(info.value) and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("opts", "message"), [
    ({"max_start_epoch": 2, "expert_epochs": 2, "train_epochs": 3}, "exceeds train_epochs"),
    ({"syn_steps": 0}, "syn_steps"),
    ({"batch_syn": 0}, "batch_syn"),
    ({"dsa_strategy": "wobble"}, "unknown DSA"),
])
def test_bad_settings_are_one_line(digits, digits_meta, opts, message, tmp_path) -> None:
    with pytest.raises(ConfigError, match=message):
        create_distiller("mtt", cache_dir=str(tmp_path), **TINY, **{**MTT, **opts}).distill(
            digits.train_images, digits.train_labels, 1, meta=digits_meta)
    assert list(tmp_path.iterdir()) == []


def test_divergence_ends_with_one_line(digits, digits_meta, tmp_path) -> None:
    eng = create_distiller("mtt", cache_dir=str(tmp_path), lr_lr=1e6, **TINY, **MTT)
    with pytest.raises(ConfigError, match="diverged .*lower engine.lr_lr"):
        eng.distill(digits.train_images, digits.train_labels, 2, meta=digits_meta)


def test_cli_runs_mtt_with_tesla_with_and_without_dp(tmp_path) -> None:
    engine = [f"engine.{k}={v}" for k, v in MTT.items() if k != "iterations"]
    args = ["distill", "method=mtt", "ipc=1", "iterations=2", "engine.tesla=true", f"engine.cache_dir={tmp_path / 'c'}",
            "model_kwargs.width=8", "eval.models=1", "eval.epochs=2", "progress=false", "device=cpu", *engine]
    out, private = tmp_path / "run", tmp_path / "dp"
    assert main([*args, f"out={out}"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "mtt" and m["iterations"] == 2
    assert main([*args, "privacy.epsilon=1", f"out={private}"]) == 0
    p = json.loads((private / "metrics.json").read_text())["privacy"]
    assert 0.9 < p["epsilon"] <= 1.0 and p["steps"] > 2  # the experts' DP-SGD steps, not the 2 iterations


def test_the_engine_reuses_experts_trained_by_the_python_api(digits, digits_meta, tmp_path) -> None:
    pre = train_experts(digits.train_images, digits.train_labels, dataset="digits", model_kwargs={"width": 8},
                        num_experts=2, epochs=3, device="cpu", cache_dir=tmp_path)
    eng = create_distiller("mtt", cache_dir=str(tmp_path), **TINY, **{**MTT, "iterations": 1})
    syn = eng.distill(digits.train_images, digits.train_labels, 1, meta=digits_meta)
    assert syn.meta["experts"]["source"] == "cache" and syn.meta["experts"]["key"] == pre.meta["key"]
