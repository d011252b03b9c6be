"""Seeded federated partitions (flwr-datasets partitioners over fedcl label vectors)."""

from __future__ import annotations

import numpy as np
import pytest

from fedcl.data.partition import partition_indices
from fedcl.errors import ConfigError, PrivacyError

LABELS = np.repeat(np.arange(10), 60)  # 600 examples, 60 per class


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
def test_partitions_are_disjoint_and_cover(scheme: str) -> None:
    parts = partition_indices(LABELS, 10, scheme, seed=0, alpha=0.3)
    joined = np.concatenate(parts)
    assert len(joined) == len(np.unique(joined))
    if scheme != "shards":  # the pathological split may leave classes nobody drew
        assert len(joined) == len(LABELS)
    assert all(len(p) > 0 for p in parts)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
def test_partitions_are_seeded(scheme: str) -> None:
    a = partition_indices(LABELS, 5, scheme, seed=1, alpha=0.3)
    b = partition_indices(LABELS, 5, scheme, seed=1, alpha=0.3)
    c = partition_indices(LABELS, 5, scheme, seed=2, alpha=0.3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_iid_is_balanced_and_shards_hold_few_classes() -> None:
    iid = partition_indices(LABELS, 6, "iid", seed=0)
    assert max(len(p) for p in iid) - min(len(p) for p in iid) <= 1
    assert all(len(np.unique(LABELS[p])) >= 8 for p in iid)
    shards = partition_indices(LABELS, 10, "shards", seed=0, classes_per_client=2)
    assert all(len(np.unique(LABELS[p])) <= 2 for p in shards)


def test_small_alpha_is_more_skewed() -> None:
    def classes_held(alpha: float) -> float:
        parts = partition_indices(LABELS, 10, "dirichlet", seed=0, alpha=alpha)
        return float(np.mean([len(np.unique(LABELS[p])) for p in parts]))

    assert classes_held(0.1) < classes_held(100.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"scheme": "banana"}, "partition scheme"), ({"num_partitions": 0}, "num_partitions"),
    ({"scheme": "dirichlet", "alpha": 0.0}, "alpha"),
])
def test_bad_partition_arguments(kwargs: dict, match: str) -> None:
    args = {"num_partitions": 4, "scheme": "iid", **kwargs}
    with pytest.raises(ConfigError, match=match):
        partition_indices(LABELS, args.pop("num_partitions"), **args)


def test_many_clients_with_a_small_alpha_still_draw() -> None:
    parts = partition_indices(LABELS, 100, "dirichlet", seed=0, alpha=0.1)  # falls back to smaller minimum sizes
    assert len(parts) == 100 and sum(len(p) for p in parts) == len(LABELS)


def test_dp_clients_summarise_only_classes_large_enough_for_their_noise() -> None:
    import torch

    from fedcl.data import load_dataset
    from fedcl.federated.config import FederatedConfig
    from fedcl.federated.task import distill_partition
    from fedcl.privacy import PrivacyConfig

    data = load_dataset("digits")
    # a client with 120 images of class 0 and 20 of class 1
    idx = torch.cat([torch.nonzero(data.train_labels == 0)[:120, 0], torch.nonzero(data.train_labels == 1)[:20, 0]])
    images, labels = data.train_images[idx], data.train_labels[idx]
    s = FederatedConfig(ipc=2, iterations=2, batch_real=8, width=8, dp_min_class_images=100)
    _, y, _ = distill_partition(s, images, labels, data, seed=0)
    assert sorted(set(y.tolist())) == [0, 1]  # without DP every class it holds
    _, y, groups = distill_partition(s, images, labels, data, seed=0,
                                     privacy=PrivacyConfig(epsilon=1.0, delta=1e-3))
    assert sorted(set(y.tolist())) == [0] and groups[0]["privacy"]["epsilon"] <= 1.0


def test_a_client_over_its_budget_is_refused_before_it_reads_its_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedcl.data import load_dataset
    from fedcl.distill.base import Distiller
    from fedcl.federated.config import FederatedConfig
    from fedcl.federated.task import distill_partition
    from fedcl.privacy import PrivacyConfig, PrivacyLedger

    data = load_dataset("digits")
    keep = data.train_labels < 2
    images, labels = data.train_images[keep], data.train_labels[keep]
    s = FederatedConfig(ipc=2, iterations=2, batch_real=8, width=8, dp_min_class_images=10)
    priv = PrivacyConfig(epsilon=1.0, delta=1e-3, accountant="prv")
    ledger = PrivacyLedger(epsilon=1.2, delta=1e-3, accountant="prv")
    _, _, groups = distill_partition(s, images, labels, data, seed=0, privacy=priv, ledger=ledger)
    ledger.record(groups[0]["privacy"], name="round 1")  # as the client app does after a round
    assert 0.9 < ledger.spent() <= 1.0 + 1e-6  # the PRV ledger reads the PRV release as calibrated
    calls: list[int] = []
    monkeypatch.setattr(Distiller, "distill", lambda *a, **k: calls.append(1))
    with pytest.raises(PrivacyError, match="budget"):
        distill_partition(s, images, labels, data, seed=1, privacy=priv, ledger=ledger)
    assert calls == [] and len(ledger.releases) == 1  # refused before any data was read; nothing recorded


def test_federated_dp_needs_an_accountant_that_composes_rounds() -> None:
    from fedcl.federated.config import FederatedConfig, FederatedPrivacy, validate

    with pytest.raises(ConfigError, match="gdp"):
        validate(FederatedConfig(privacy=FederatedPrivacy(epsilon=1.0, accountant="gdp"), strategies=["oneshot"]))


@pytest.mark.parametrize("bad", [{"max_grad_norm": -1.0}, {"delta": 2.0}, {"accountant": "xyz"}])
def test_a_bad_privacy_block_is_refused_before_any_client_starts(bad: dict) -> None:
    from fedcl.federated.config import FederatedConfig, FederatedPrivacy, validate

    with pytest.raises(PrivacyError, match=next(iter(bad))):
        validate(FederatedConfig(privacy=FederatedPrivacy(epsilon=1.0, **bad), strategies=["oneshot"]))


def test_run_config_carries_the_privacy_block_to_each_clients_ledger() -> None:
    from flwr.app import Context, RecordDict

    from fedcl.federated.client_app import _privacy
    from fedcl.federated.config import FederatedConfig, FederatedPrivacy, from_run_config, to_run_config

    priv = FederatedPrivacy(epsilon=2.0, delta=1e-6, max_grad_norm=0.5, accountant="prv", replay=2, center=False,
                            budget=5.0)
    rc = to_run_config(FederatedConfig(privacy=priv, strategies=["oneshot"]))
    assert "fault" not in rc  # no test hook in what a deployed node obeys
    s = from_run_config(rc)
    context = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config=rc)
    got, ledger = _privacy(s, context, "oneshot")
    assert (got.epsilon, got.delta, got.max_grad_norm, got.accountant) == (2.0, 1e-6, 0.5, "prv")
    assert (got.replay, got.center) == (2, False)
    # each summary is one release at epsilon; the ledger caps the client's total at the budget
    assert ledger.epsilon == 5.0 and ledger.accountant == "prv" and ledger.owner == "client-7"
    s_nocap = from_run_config(to_run_config(FederatedConfig(privacy=FederatedPrivacy(epsilon=2.0), strategies=["oneshot"])))
    assert _privacy(s_nocap, Context(run_id=1, node_id=7, node_config={}, state=RecordDict(),
                                     run_config={}))[1].epsilon is None  # no budget: recorded, never refused


@pytest.mark.parametrize(("epsilon", "budget", "match"), [
    (1.0, 0.5, "privacy.budget must be > 0 and >= privacy.epsilon"),
    (1.0, -1.0, "privacy.budget must be > 0"),
    (0.0, 2.0, "set privacy.epsilon too"),
])
def test_a_budget_below_one_release_is_refused_in_one_line(epsilon, budget, match) -> None:
    from fedcl.federated.config import FederatedConfig, FederatedPrivacy, validate

    with pytest.raises(ConfigError, match=match) as info:
        validate(FederatedConfig(privacy=FederatedPrivacy(epsilon=epsilon, budget=budget), strategies=["oneshot"]))
    assert len(str(info.value).splitlines()) == 1
    validate(FederatedConfig(privacy=FederatedPrivacy(epsilon=1.0, budget=1.0), strategies=["oneshot"]))  # one release


@pytest.mark.parametrize("gpus", [-0.5, 0.25])
def test_client_gpus_are_checked_before_ray_starts(gpus: float, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from fedcl.federated.config import ClientResources, FederatedConfig, validate

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU machine, also where CI has a GPU
    with pytest.raises(ConfigError, match="num_gpus"):
        validate(FederatedConfig(client_resources=ClientResources(num_gpus=gpus)))
    validate(FederatedConfig(client_resources=ClientResources(num_gpus=0.0)))  # the default passes


def test_cuda_clients_must_reserve_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray hides the GPUs from a client with num_gpus=0, so device=cuda would fail inside every actor."""
    import torch

    from fedcl.federated.config import ClientResources, FederatedConfig, validate

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigError, match="device=cuda needs client_resources.num_gpus > 0"):
        validate(FederatedConfig(device="cuda"))
    validate(FederatedConfig(device="cuda", client_resources=ClientResources(num_gpus=0.2)))


def test_federated_modules_import_without_avalanche() -> None:
    """A Flower server or client needs no continual-learning stack: the summaries strategies, the
    ServerApp and the ClientApp import with Avalanche blocked."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['avalanche'] = None\n"
            "import strategies.summaries, fedcl.federated.server_app, fedcl.federated.client_app\n"
            "import strategies\n"
            "try:\n    strategies.DistilledReplay\nexcept ImportError:\n    print('replay needs avalanche')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "replay needs avalanche"


def test_server_noise_reaches_every_training_batch_and_not_the_centralised_baseline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import fedcl.federated.task as task
    from fedcl.data import load_dataset
    from fedcl.federated.command import FederatedConfig, centralised
    from fedcl.federated.config import from_run_config, to_run_config, validate
    from fedcl.federated.task import make_model, train_global

    data = load_dataset("digits")
    s = FederatedConfig(width=8)
    x, y = data.train_images[:300], data.train_labels[:300]
    clean = train_global(s, make_model(s, data, seed=0), x, y, data, epochs=30, seed=1, dsa=False, lr=0.1)
    drowned = train_global(dataclasses.replace(s, server_noise=100.0), make_model(s, data, seed=0), x, y, data,
                           epochs=30, seed=1, dsa=False, lr=0.1)
    assert clean > 0.7 and drowned < 0.3  # noise 100x the pixel scale leaves nothing to learn from
    assert from_run_config(to_run_config(FederatedConfig(server_noise=0.5))).server_noise == 0.5
    with pytest.raises(ConfigError, match="server_noise"):
        validate(FederatedConfig(server_noise=-1.0))
    seen: list[tuple[float, float]] = []
    monkeypatch.setattr(task, "train_global", lambda s, *a, lr, **k: seen.append((s.server_noise, lr)) or 1.0)
    centralised(FederatedConfig(server_noise=0.5, lr=0.02))
    assert seen == [(0.0, 0.02)]  # real images: the baseline trains without the summaries' noise


def test_the_server_trains_on_summaries_at_the_protocols_learning_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    import fedcl.federated.task as task
    from fedcl.data import load_dataset
    from fedcl.federated.config import FederatedConfig
    from fedcl.federated.task import SERVER_LR, make_model, train_global

    data = load_dataset("digits")
    rates: list[float] = []
    stock = task.train_model
    monkeypatch.setattr(task, "train_model", lambda *a, lr, **k: rates.append(lr) or stock(*a, lr=lr, **k))
    s = FederatedConfig(width=8, lr=0.02)
    train_global(s, make_model(s, data, seed=0), data.train_images[:50], data.train_labels[:50], data, epochs=1,
                 seed=1, dsa=False)
    assert rates == [SERVER_LR] == [0.01]  # the DC/DM evaluation protocol's, not FedAvg's local lr


def test_server_noise_decay_scales_the_noise_where_the_learning_rate_falls(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import fedcl.federated.task as task
    from fedcl.data import load_dataset
    from fedcl.federated.config import FederatedConfig, from_run_config, to_run_config, validate
    from fedcl.federated.task import SERVER_BATCH, make_model, train_global

    data = load_dataset("digits")
    n = SERVER_BATCH + 44  # two minibatches per epoch
    zeros, y = torch.zeros(n, *data.train_images.shape[1:]), data.train_labels[:n]
    stds: list[float] = []
    stock = task.train_model

    def recording(*a: object, augment: object, **k: object) -> torch.nn.Module:
        def noted(xb: torch.Tensor) -> torch.Tensor:
            out = augment(xb)  # type: ignore[operator]
            stds.append(float(out.std()))
            return out
        return stock(*a, augment=noted, **k)

    monkeypatch.setattr(task, "train_model", recording)
    for decay in (1.0, 0.25):
        s = FederatedConfig(width=8, server_noise=2.0, server_noise_decay=decay)
        train_global(s, make_model(s, data, seed=0), zeros, y, data, epochs=5, seed=1, dsa=False)
    # 5 epochs: train_model divides the lr by 10 from epoch 5 // 2 = 2, i.e. from the fifth minibatch
    assert stds[:10] == pytest.approx([2.0] * 10, rel=0.05)
    assert stds[10:] == pytest.approx([2.0] * 4 + [0.5] * 6, rel=0.05)
    assert from_run_config(to_run_config(FederatedConfig(server_noise_decay=0.5))).server_noise_decay == 0.5
    with pytest.raises(ConfigError, match="server_noise_decay"):
        validate(FederatedConfig(server_noise_decay=-0.5))
