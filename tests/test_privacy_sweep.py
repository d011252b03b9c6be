"""Membership-inference audit maths and the privacy-sweep command (tiny settings)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from fedcl.errors import ConfigError, FedclError, PrivacyError
from fedcl.privacy import PrivacyConfig
from fedcl.privacy.audit import attack_metrics, auc_standard_error, empirical_epsilon, make_audit_data
from fedcl.privacy.sweep import SweepConfig, _validate, main


def test_random_scores_give_no_evidence():
    rng = np.random.default_rng(0)
    member = np.r_[np.ones(300), np.zeros(300)]
    m = attack_metrics(rng.normal(size=600), member)
    assert abs(m["auc"] - 0.5) < 0.07
    assert m["eps_lower_bound"] < 0.5


def test_separable_scores_give_a_large_bound():
    member = np.r_[np.ones(300), np.zeros(300)]
    scores = member + np.random.default_rng(1).normal(scale=0.01, size=600)
    m = attack_metrics(scores, member)
    assert m["auc"] == 1.0 and m["tpr_at_1fpr"] == 1.0
    assert 3.0 < m["eps_lower_bound"] < empirical_epsilon(np.r_[scores, scores], np.r_[member, member]) + 1e-9


def test_auc_standard_error_matches_the_spread_of_null_audits():
    # 400 audits of a release that ignores membership: their AUCs scatter around 0.5 by the stated SE
    rng = np.random.default_rng(2)
    member = np.r_[np.ones(200), np.zeros(200)]
    aucs = [attack_metrics(rng.normal(size=400), member)["auc"] for _ in range(400)]
    se = auc_standard_error(0.5, 200, 200)
    assert abs(np.mean(aucs) - 0.5) < 3 * se / np.sqrt(400)
    assert 0.85 * se < np.std(aucs) < 1.15 * se
    assert auc_standard_error(0.9, 200, 200) < se  # a far-from-chance AUC is known more precisely


@pytest.mark.parametrize("over, err", [
    ({"methods": ["nope"]}, ConfigError),
    ({"methods": []}, ConfigError),
    ({"epsilons": [0.0]}, PrivacyError),
    ({"epsilons": [], "nodp": False}, ConfigError),
    ({"audit_members": 0}, ConfigError),
    ({"privacy": PrivacyConfig(delta=2.0)}, PrivacyError),
    ({"privacy": PrivacyConfig(max_grad_norm=0.0)}, PrivacyError),
    ({"methods": ["dm"], "engine": {"mtt": {"num_experts": 1}}}, ConfigError),
    ({"methods": ["dm", "dpsgd"], "engine": {"dpsgd": {"lr": 1}}}, ConfigError),
])
def test_bad_sweep_configs(over, err):
    with pytest.raises(err):
        _validate(SweepConfig(**over))


def test_sweep_refuses_privacy_epsilon_and_unknown_keys(tmp_path):
    with pytest.raises(ConfigError):
        main([f"out={tmp_path / 'a'}", "privacy.epsilon=1"])
    with pytest.raises(FedclError):
        main([f"out={tmp_path / 'b'}", "no_such_key=1"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_tiny_sweep_writes_its_run_folder(tmp_path):
    out = tmp_path / "run"
    rc = main([f"out={out}", "epsilons=[4.0]", "methods=[dm,dpsgd]", "iterations=2", "width=8", "eval.models=1",
               "eval.epochs=2", "dpsgd_epochs=1", "audit_members=50", "audit_shadows=2", "audit_shadow_size=100"])
    assert rc == 0
    for name in ("config.yaml", "metrics.json", "results.csv", "privacy_utility.png", "audit.md"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {(r["method"], r["target_epsilon"]) for r in rows} == {("dm", ""), ("dm", "4.0"), ("dpsgd", ""),
                                                                  ("dpsgd", "4.0")}
    metrics = json.loads((out / "metrics.json").read_text())
    for r in metrics["rows"]:
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["loss_auc"] <= 1.0
        if r["target_epsilon"] is not None:
            assert r["privacy"]["epsilon"] <= 4.0 and r["privacy"]["steps"] > 0


def test_audit_non_members_are_held_out_of_the_release():
    train_x = torch.arange(100, dtype=torch.float32)[:, None]
    train_y = torch.arange(100) % 10
    test_x, test_y = -torch.ones(30, 1), torch.zeros(30, dtype=torch.long)
    d = make_audit_data(train_x, train_y, test_x, test_y, n=50, seed=3)
    used = set(d.keep.tolist())
    members = d.x[d.member == 1, 0].long().tolist()
    non_members = d.x[d.member == 0, 0].long().tolist()
    assert len(members) == len(non_members) == 20  # capped at a fifth of the training set
    assert set(members) <= used and not set(non_members) & used
    assert len(used) == 80 and (d.shadow_x < 0).all()  # the shadow pool is the test set


@pytest.mark.slow
def test_sweep_with_real_reference_and_pipeline_shadows(tmp_path):
    out = tmp_path / "run"
    rc = main([f"out={out}", "epsilons=[4.0]", "nodp=false", "methods=[real,dm]", "iterations=2", "width=8",
               "eval.models=2", "eval.epochs=2", "real_epochs=2", "audit_members=40", "audit_shadows=2",
               "audit_shadow_pipeline=true"])
    assert rc == 0
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    # real runs once, without DP, even with nodp=false; dm only at the listed epsilon
    assert [(r["method"], r["target_epsilon"]) for r in rows] == [("real", None), ("dm", 4.0)]
    for r in rows:
        assert 0.0 <= r["lira_auc"] <= 1.0 and 0.0 < r["lira_auc_se"] < 0.2
    assert "± " in (out / "audit.md").read_text()


def test_engine_options_reach_the_engine_dp_mtt(tmp_path):
    from fedcl.distill.experts import steps_per_epoch

    out = tmp_path / "run"
    mtt = {"num_experts": 1, "train_epochs": 2, "max_start_epoch": 0, "expert_epochs": 1, "syn_steps": 2,
           "cache_dir": str(tmp_path / "experts")}
    rc = main([f"out={out}", "epsilons=[4.0]", "nodp=false", "methods=[mtt]", "iterations=2", "width=8", "ipc=1",
               "eval.models=1", "eval.epochs=2", "audit=false", "device=cpu", "batch_real=16",
               *[f"engine.mtt.{k}={v}" for k, v in mtt.items()]])
    assert rc == 0
    (row,) = json.loads((out / "metrics.json").read_text())["rows"]
    from fedcl.data import load_dataset

    n = len(load_dataset("digits").train_labels)
    assert row["privacy"]["steps"] == 1 * 2 * steps_per_epoch(n, 16, 10)  # one expert, two DP-SGD epochs
    assert row["privacy"]["epsilon"] <= 4.0 and (tmp_path / "experts").is_dir()
