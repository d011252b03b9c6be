"""DistilledBuffer: size, class balance, stream shape/dtype, stock ReplayPlugin, checkpoints."""

from __future__ import annotations

import pytest
import torch
from avalanche.training import Naive
from avalanche.training.plugins import ReplayPlugin

from fedcl.continual.benchmarks import make_benchmark
from fedcl.continual.runner import make_evaluator
from fedcl.errors import ConfigError
from fedcl.models import create_model
from strategies.replay import DistilledBuffer, DistilledReplay, class_shares

TINY = {"iterations": 2, "batch_real": 16, "model_kwargs": {"width": 8}, "dsa": False, "device": "cpu"}


@pytest.fixture(scope="module")
def bench():
    return make_benchmark("split_digits", seed=0)


def _strategy(bench, plugins=None, **kw):
    torch.manual_seed(0)
    model = create_model("convnet", bench.in_shape, 10, width=8)
    return model, dict(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                       criterion=torch.nn.CrossEntropyLoss(), train_mb_size=64, train_epochs=1, eval_mb_size=512,
                       device="cpu", evaluator=make_evaluator(), plugins=plugins, **kw)


@pytest.mark.parametrize("max_size", [10, 13, 20, 37, 100])
def test_class_shares_balanced_and_bounded(max_size):
    seen, shares = [], {}
    for new in ([3, 1], [0, 7], [2, 9], [4, 8], [5, 6]):
        seen += new
        prev = shares
        shares = class_shares(max_size, seen, new)
        assert sum(shares.values()) <= max_size
        assert max(shares.values()) - min(shares.values()) <= 1
        # old classes never have to grow: their share is at most what they held before
        assert all(shares[c] <= prev[c] for c in prev)
    base, rem = divmod(max_size, 10)
    assert sum(shares.values()) == base * 10 + min(rem, 2)  # the remainder goes to the 2 newest classes


@pytest.mark.parametrize("shrink", ["subsample", "redistill"])
def test_buffer_in_stock_replay_plugin(bench, shrink):
    mem = 20
    buf = DistilledBuffer(mem, distiller_kwargs=TINY, num_classes=10, meta=bench.meta, shrink=shrink)
    _, kwargs = _strategy(bench, plugins=[ReplayPlugin(mem_size=mem, storage_policy=buf)])
    strategy = Naive(**kwargs)
    x0, _, _ = bench.scenario.train_stream[0].dataset[0]
    seen = set()
    for exp in bench.scenario.train_stream:
        strategy.train(exp, num_workers=0)
        seen |= set(exp.classes_in_this_experience)
        counts = buf.class_counts()
        assert set(counts) == seen
        assert len(buf.buffer) == sum(counts.values()) <= mem
        assert max(counts.values()) - min(counts.values()) <= 1
        x, y, t = buf.buffer[0]
        assert x.shape == x0.shape and x.dtype == x0.dtype
        assert sorted(set(buf.buffer.targets)) == sorted(seen)
    assert len(buf.buffer) == mem and set(buf.class_counts().values()) == {2}
    assert len(buf.distill_seconds) == 5 and all(s > 0 for s in buf.distill_seconds)
    # the final memory is what Avalanche replays: a loader over it yields (x, y, task)
    xb, yb, tb = next(iter(torch.utils.data.DataLoader(buf.buffer, batch_size=64)))
    assert xb.shape == (mem, *x0.shape) and torch.isfinite(xb).all() and (tb == 0).all()


def test_fixed_size_distills_each_class_once_at_the_share_it_keeps(bench):
    # adaptive_size=False (Avalanche's ClassBalancedBuffer rule): mem // num_classes per class from the start
    buf = DistilledBuffer(30, distiller_kwargs=TINY, num_classes=10, meta=bench.meta, adaptive_size=False)
    kept = {}
    for i, exp in enumerate(bench.scenario.train_stream):
        buf.post_adapt(None, exp)
        assert set(buf.class_counts().values()) == {3} and len(buf.buffer) == 3 * 2 * (i + 1)
        for c in kept:  # an old class is never touched again
            assert torch.equal(buf.memory[c], kept[c])
        kept = {c: buf.memory[c].clone() for c in buf.classes}
    assert len(buf.buffer) == 30
    adaptive = DistilledBuffer(30, distiller_kwargs=TINY, num_classes=10, meta=bench.meta)
    adaptive.post_adapt(None, bench.scenario.train_stream[0])
    assert set(adaptive.class_counts().values()) == {15}  # the default divides over the classes seen so far


def test_fixed_size_needs_the_number_of_classes(bench):
    with pytest.raises(ConfigError, match="give num_classes"):
        DistilledBuffer(30, adaptive_size=False)
    with pytest.raises(ConfigError, match="mem_size >= 10"):
        DistilledBuffer(8, num_classes=10, adaptive_size=False)
    buf = DistilledBuffer(30, distiller_kwargs=TINY, num_classes=4, meta=bench.meta, adaptive_size=False)
    y = torch.tensor([0, 1, 5])
    with pytest.raises(ConfigError, match="class 5 is outside the stream's num_classes=4"):
        buf.update_from_tensors(torch.zeros(3, *bench.in_shape), y)
    assert buf.classes == []


def test_checkpoint_round_trip(bench, tmp_path):
    from safetensors.torch import load_file, save_file

    buf = DistilledBuffer(12, distiller_kwargs=TINY, num_classes=10, meta=bench.meta)
    for exp in list(bench.scenario.train_stream)[:2]:
        buf.post_adapt(None, exp)
    save_file(buf.state_dict(), str(tmp_path / "buffer.safetensors"))
    other = DistilledBuffer(99, distiller_kwargs=TINY)
    other.load_state_dict(load_file(str(tmp_path / "buffer.safetensors")))
    assert other.max_size == 12 and other.classes == buf.classes and other.class_counts() == buf.class_counts()
    for (xa, ya, ta), (xb, yb, tb) in zip(buf.buffer, other.buffer):
        assert torch.equal(xa, xb) and int(ya) == int(yb) and int(ta) == int(tb)
    # the restored buffer keeps learning: the third experience still fits the budget
    other.post_adapt(None, bench.scenario.train_stream[2])
    assert len(other.buffer) <= 12 and len(other.classes) == 6


def test_resize_shrinks_every_class(bench):
    buf = DistilledBuffer(20, distiller_kwargs=TINY, num_classes=10, meta=bench.meta)
    buf.post_adapt(None, bench.scenario.train_stream[0])
    assert list(buf.class_counts().values()) == [10, 10]
    buf.resize(None, 6)
    assert list(buf.class_counts().values()) == [3, 3] and len(buf.buffer) == 6


def test_bad_input_fails_before_training(bench):
    with pytest.raises(ConfigError, match="not-an-engine"):
        DistilledBuffer(20, method="not-an-engine")
    with pytest.raises(ConfigError, match="bad option"):
        DistilledBuffer(20, distiller_kwargs={"no_such_option": 1})
    buf = DistilledBuffer(3, distiller_kwargs=TINY, num_classes=10)
    buf.post_adapt(None, bench.scenario.train_stream[0])
    with pytest.raises(ConfigError, match="mem_size >= 4"):
        buf.post_adapt(None, bench.scenario.train_stream[1])


def test_distilled_replay_gdumb_trains_fresh_model_on_memory(bench):
    model, kwargs = _strategy(bench)
    strategy = DistilledReplay(**kwargs, mem_size=10, distiller_kwargs=TINY, num_classes=10, meta=bench.meta,
                               gdumb=True, gdumb_epochs=100, gdumb_lr=0.05)  # DSA on (default)
    # margin: 50 epochs at lr 0.05 already fit all 10 images on 10 of 10 seeds (30 at lr 0.01 fit 6-8 of 10)
    exps = list(bench.scenario.train_stream)[:2]
    for exp in exps:
        strategy.train(exp, num_workers=0)
    assert strategy.model is not model  # replaced by the fresh model trained on the memory
    x, y = strategy.storage_policy.tensors()
    assert len(y) == 10
    with torch.no_grad():
        acc = (strategy.model(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.8  # it fits the 10 memory images of the 4 classes seen
