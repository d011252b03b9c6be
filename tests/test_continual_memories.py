"""DistilledBuffer with every engine, parameterised memories and soft labels; selections shrink by subsampling."""

from __future__ import annotations

import pytest
import torch
from avalanche.training import Naive
from avalanche.training.plugins import ReplayPlugin
from safetensors.torch import load_file, save_file

from fedcl.continual.benchmarks import make_benchmark
from fedcl.continual.runner import make_evaluator
from fedcl.distill import list_distillers
from fedcl.errors import ConfigError
from fedcl.models import create_model
from strategies.replay import DistilledBuffer, DistilledGDumbPlugin

BASE = {"model_kwargs": {"width": 8}, "device": "cpu"}
SYNTH = {**BASE, "iterations": 2, "batch_real": 16, "soft_label_steps": 2}
TINY = {  # the fewest steps each engine takes; selection engines take no param and no soft labels
    "dm": {**SYNTH, "dsa": False}, "gm": {**SYNTH, "dsa": False, "outer_loop": 1, "inner_loop": 1},
    "dsa": {**SYNTH, "outer_loop": 1, "inner_loop": 1}, "kip": {**SYNTH, "n_models": 1},
    "frepo": {**SYNTH, "pool_size": 1, "max_online_updates": 1},
    "mtt": {**SYNTH, "dsa": False, "num_experts": 1, "train_epochs": 2, "max_start_epoch": 1, "expert_epochs": 1,
            "syn_steps": 2},
    "random": BASE, "herding": {**BASE, "feature_epochs": 1}, "kcenter": {**BASE, "feature_epochs": 1},
}
SELECTION = ("random", "herding", "kcenter")


@pytest.fixture(scope="module")
def bench():
    return make_benchmark("split_digits", seed=0)


def _two(bench):
    return list(bench.scenario.train_stream)[:2]


def _fill(buf, bench):
    for exp in _two(bench):
        buf.post_adapt(None, exp)
    return buf


def test_every_engine_in_the_table_is_registered():
    assert set(TINY) <= set(list_distillers())


@pytest.mark.parametrize("method", sorted(TINY))
def test_every_engine_with_idc_and_soft_labels(bench, method, tmp_path):
    # mem 8: 4 images' worth per class after the first experience, 2 after the second (the old classes shrink)
    memory = {} if method in SELECTION else {"param": "idc", "param_kwargs": {"factor": 2}, "soft_labels": True}
    buf = _fill(DistilledBuffer(8, method=method, distiller_kwargs={**TINY[method], **memory}, num_classes=10,
                                meta=bench.meta), bench)
    assert buf.class_budgets() == dict.fromkeys(buf.classes, 2) and len(buf.classes) == 4
    per = 2 if method in SELECTION else 2 * 4  # idc with factor 2 decodes every stored image into 4
    assert buf.class_counts() == dict.fromkeys(buf.classes, per)
    x, y = buf.tensors()
    assert x.shape == (4 * per, 1, 8, 8) and torch.isfinite(x).all()
    if method in SELECTION:
        assert y.dtype == torch.int64 and buf.stored_numel() == 8 * 64
    else:  # soft labels for the fresh-model learner, their most likely class for Avalanche's int targets
        assert y.shape == (4 * per, 10) and torch.allclose(y.sum(1), torch.ones(4 * per))
        assert list(buf.buffer.targets) == y.argmax(1).tolist()
        assert buf.stored_numel() == 8 * 64 + 4 * per * 10  # the budget's images plus the soft labels' logits
    save_file(buf.state_dict(), str(tmp_path / "buf.safetensors"))
    other = DistilledBuffer(99, method=method, distiller_kwargs={**TINY[method], **memory})
    other.load_state_dict(load_file(str(tmp_path / "buf.safetensors")))
    xo, yo = other.tensors()
    assert torch.allclose(xo, x) and torch.allclose(yo.float(), y.float()) and other.class_budgets() == buf.class_budgets()


def test_soft_labels_train_the_fresh_model_and_redistill_keeps_them(bench):
    kwargs = {**TINY["dm"], "soft_labels": True, "param": "idc"}
    buf = _fill(DistilledBuffer(8, distiller_kwargs=kwargs, num_classes=10, meta=bench.meta, shrink="redistill"), bench)
    first = buf.classes[:2]  # shrunk from 4 to 2 by re-distilling: they carry the mean of their learned labels
    x, y = buf.tensors()
    assert y.shape == (32, 10) and buf.class_budgets() == dict.fromkeys(buf.classes, 2)
    for c in first:
        rows = buf.soft[c]
        assert rows.shape == (8, 10) and torch.allclose(rows, rows[:1].expand(8, -1), atol=1e-6)
        assert buf.memories[c].name == "idc"
    plugin = DistilledGDumbPlugin(buf, epochs=3, dsa=False)
    torch.manual_seed(0)
    model = create_model("convnet", bench.in_shape, 10, width=8)
    plugin.init_model = model

    class Strategy:  # what after_training_exp reads of a strategy
        device = torch.device("cpu")

    strategy = Strategy()
    plugin.after_training_exp(strategy)
    assert strategy.model is not model and strategy.model(x).shape == (32, 10)


def test_haba_memory_keeps_hallucinators_and_cuts_bases(bench):
    # 8x8 digits: one basis is 64 numbers; one hallucinator of width 1 takes 21, so a share of 2 holds one basis
    memory = {"param": "haba", "param_kwargs": {"hallucinators": 1, "hidden": 1}}
    buf = _fill(DistilledBuffer(8, distiller_kwargs={**TINY["dm"], **memory}, num_classes=10, meta=bench.meta), bench)
    assert buf.class_counts() == dict.fromkeys(buf.classes, 1)
    assert all(m.stored_numel() <= m.budget_numel() for m in buf.memories.values())
    a, b = (buf.memories[c] for c in buf.classes[:2])  # one experience: the same hallucinator, copied to each
    assert torch.equal(a.hallucinators[0].enc.weight, b.hallucinators[0].enc.weight)


@pytest.mark.parametrize("method", ["random", "herding"])
def test_selection_shrinks_by_subsampling_its_selection(bench, method):
    # shrink=redistill is asked for, but a selection is cut to its first picks, never selected again
    buf = DistilledBuffer(8, method=method, distiller_kwargs=TINY[method], num_classes=10, meta=bench.meta,
                          shrink="redistill")
    first = _two(bench)[0]
    buf.post_adapt(None, first)
    before = {c: buf.memory[c].clone() for c in buf.classes}
    assert all(v.shape[0] == 4 for v in before.values())
    buf.post_adapt(None, _two(bench)[1])
    real = torch.stack([first.dataset[i][0] for i in range(len(first.dataset))]).flatten(1)
    for c, images in before.items():
        assert torch.equal(buf.memory[c], images[:2])  # the first two picks of the earlier selection
        assert all((real == im.flatten()).all(1).any() for im in buf.memory[c])  # real images of the experience
    assert len(buf.distill_seconds) == 2


def test_distilled_param_in_the_stock_replay_plugin(bench):
    buf = DistilledBuffer(8, distiller_kwargs={**TINY["dm"], "param": "idc", "soft_labels": True}, num_classes=10,
                          meta=bench.meta)
    torch.manual_seed(0)
    model = create_model("convnet", bench.in_shape, 10, width=8)
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), device="cpu",
                     criterion=torch.nn.CrossEntropyLoss(), train_mb_size=64, train_epochs=1, eval_mb_size=512,
                     evaluator=make_evaluator(), plugins=[ReplayPlugin(mem_size=8, storage_policy=buf)])
    for exp in _two(bench):
        strategy.train(exp, num_workers=0)
    assert len(buf.buffer) == 4 * 8  # decoded images are replayed, with int targets
    xb, yb, _ = next(iter(torch.utils.data.DataLoader(buf.buffer, batch_size=64)))
    assert yb.dtype == torch.int64 and xb.shape == (32, 1, 8, 8)


@pytest.mark.parametrize("kwargs, match", [
    ({**TINY["dm"], "param": "pixels"}, "pixels"),
    ({**TINY["dm"], "param": "idc", "param_kwargs": {"factor": 3}}, "factor=3"),
])
def test_bad_memories_fail_with_one_line(bench, kwargs, match):
    buf = DistilledBuffer(8, distiller_kwargs=kwargs, num_classes=10, meta=bench.meta) if "factor" in str(kwargs) \
        else None
    with pytest.raises(ConfigError, match=match):
        if buf is None:
            DistilledBuffer(8, distiller_kwargs=kwargs)
        else:
            buf.post_adapt(None, _two(bench)[0])
    if buf is not None:
        assert buf.classes == [] and buf.experiences == 0  # nothing half-written


def test_soft_labels_asked_of_a_selection_engine_fail_at_once():
    with pytest.raises(ConfigError, match="selects real images"):
        DistilledBuffer(8, method="herding", distiller_kwargs={**BASE, "soft_labels": True})
