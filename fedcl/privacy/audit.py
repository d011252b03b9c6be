"""Membership-inference audit: does a trained model reveal which real examples were used?

Members are real training examples (used to train the model, or to distill the set the
model was trained on); non-members are training examples held out of the release, so both
groups come from the same split (MNIST's test set is not distributed like its training set,
and drawing non-members from it biases every attack). The shadow models train on the test
set, which holds no audited example. Two attacks score each example (higher = "member"):

- **loss threshold** (Yeom et al.): the negative cross-entropy of the target model;
- **calibrated (LiRA-style, offline)**: the target's logit-scaled confidence
  ``phi = log p_y - log(1 - p_y)`` compared with its distribution under a few *shadow*
  models trained without any audited example: ``(phi - mean_out) / std_out`` (Carlini et
  al., 2022, offline variant with one-sided Gaussian test). ``mean_out`` is per example;
  ``std_out`` is per example only from ``PER_EXAMPLE_STD_SHADOWS`` shadows on, and one
  variance pooled over all examples below that, as the paper advises for few shadows
  (the standard deviation of two or three values is mostly noise).

**Shadows.** By default they are models trained on real pool data with the DP-SGD
hyper-parameters (cheap, and matched to the ``dpsgd`` and ``real`` targets). With
``audit_shadow_pipeline`` the shadows of each target are made by *the target's own
pipeline* on a same-size sample of the pool: the same engine at the same epsilon, then
the same training, so ``mean_out`` is each example's score under that pipeline when the
example is out (a set distilled from other data). Either way members and non-members are
exchangeable when the release ignores them, so a null AUC is 0.5 up to sampling noise:
its standard error (Hanley and McNeil, 1982) is reported beside it (about 0.018 for 500
members and 500 non-members, 0.012 for 1,200 each).

Reported per target: ROC AUC with its standard error, TPR at 1% FPR, and an empirical epsilon lower bound: for
every threshold, ``log((TPR_lo - delta) / FPR_hi)`` and ``log((1 - FPR_hi - delta) / (1 - TPR_lo))``
with 95% Clopper-Pearson bounds, maximised over thresholds (0 when no threshold is
significant). A DP model must have AUC near 0.5 and a bound below its epsilon; an audit
can only show leakage, never prove privacy.

``main(argv)`` is ``fedcl audit [CONFIG.yaml] [key=value ...]``: it audits saved synthetic
sets (``sets=[a.safetensors,...]``) against a dataset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import beta
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

__all__ = ["AuditData", "attack_metrics", "auc_standard_error", "audit_model", "empirical_epsilon", "main",
           "make_audit_data", "shadow_logits", "train_shadows"]


@dataclass
class AuditData:
    """The audited examples: ``x``/``y`` with ``member`` (1 = used in training), and the shadow pool."""

    x: torch.Tensor
    y: torch.Tensor
    member: np.ndarray
    shadow_x: torch.Tensor
    shadow_y: torch.Tensor
    keep: torch.Tensor
    """Indices of the training examples the audited release may use (all but the non-members)."""


PER_EXAMPLE_STD_SHADOWS = 8
MAX_HOLDOUT_FRACTION = 0.2


def make_audit_data(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                    n: int = 500, seed: int = 0) -> AuditData:
    """``n`` non-members held out of the training set and ``n`` members drawn from the rest.

    The release must then use only ``train_x[keep]``. ``n`` is capped at a fifth of the
    training set. The whole test set is the shadow pool (it holds no audited example)."""
    g = torch.Generator().manual_seed(seed)
    n = max(1, min(n, int(len(train_x) * MAX_HOLDOUT_FRACTION)))
    perm = torch.randperm(len(train_x), generator=g)
    out, keep = perm[:n], perm[n:].sort().values
    mi = keep[torch.randperm(len(keep), generator=g)[:n]]
    x = torch.cat([train_x[mi], train_x[out]])
    y = torch.cat([train_y[mi], train_y[out]])
    member = np.concatenate([np.ones(n), np.zeros(n)])
    return AuditData(x, y, member, test_x, test_y, keep)


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    model.eval()
    dev = next(model.parameters()).device
    return torch.cat([model(x[i:i + batch].to(dev)).float().cpu() for i in range(0, len(x), batch)])


def _phi(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Logit-scaled confidence of the true class, computed stably."""
    logp = F.log_softmax(logits.double(), dim=1)
    lp = logp.gather(1, y[:, None]).squeeze(1)
    others = logp.scatter(1, y[:, None], -math.inf).logsumexp(1)
    return (lp - others).numpy()


def train_shadows(data: AuditData, make_model: Any, train_fn: Any, *, k: int = 4, size: int = 2000,
                  seed: int = 0) -> list[nn.Module]:
    """``k`` shadow models, each trained by ``train_fn(model, x, y)`` on ``size`` pool examples."""
    g = torch.Generator().manual_seed(seed + 777)
    models = []
    for i in range(k):
        idx = torch.randperm(len(data.shadow_x), generator=g)[:size]
        torch.manual_seed(seed + 1000 + i)
        m = make_model()
        train_fn(m, data.shadow_x[idx], data.shadow_y[idx])
        models.append(m)
    return models


def shadow_logits(data: AuditData, shadows: list[nn.Module]) -> np.ndarray:
    """``(k, n)`` logit-scaled confidences of every shadow model on the audited examples."""
    return np.stack([_phi(_logits(m, data.x), data.y) for m in shadows])


def empirical_epsilon(scores: np.ndarray, member: np.ndarray, delta: float = 1e-5, alpha: float = 0.05) -> float:
    """Epsilon lower bound implied by the attack, with Clopper-Pearson confidence (level ``1 - alpha``)."""
    pos, neg = scores[member == 1], scores[member == 0]
    n1, n0 = len(pos), len(neg)
    best = 0.0
    for t in np.unique(scores):
        tp, fp = int((pos >= t).sum()), int((neg >= t).sum())
        tpr_lo = beta.ppf(alpha / 2, tp, n1 - tp + 1) if tp > 0 else 0.0
        fpr_hi = beta.ppf(1 - alpha / 2, fp + 1, n0 - fp) if fp < n0 else 1.0
        for num, den in ((tpr_lo - delta, fpr_hi), (1 - fpr_hi - delta, 1 - tpr_lo)):
            if num > 0 and den > 0 and num > den:
                best = max(best, math.log(num / den))
    return float(best)


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an ROC AUC from ``n_pos`` positives and ``n_neg`` negatives (Hanley and McNeil, 1982)."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    return float(math.sqrt(max(var, 0.0)))


def attack_metrics(scores: np.ndarray, member: np.ndarray, delta: float = 1e-5) -> dict[str, float]:
    """``{auc, auc_se, tpr_at_1fpr, eps_lower_bound}`` of one attack's scores."""
    fpr, tpr, _ = roc_curve(member, scores)
    ok = fpr <= 0.01
    auc = float(roc_auc_score(member, scores))
    n_pos = int((member == 1).sum())
    return {"auc": auc, "auc_se": auc_standard_error(auc, n_pos, len(member) - n_pos),
            "tpr_at_1fpr": float(tpr[ok].max()) if ok.any() else 0.0,
            "eps_lower_bound": empirical_epsilon(scores, member, delta)}


def audit_model(model: nn.Module, data: AuditData, shadow_phi: np.ndarray | None = None,
                delta: float = 1e-5) -> dict[str, dict[str, float]]:
    """Run both attacks on ``model``: ``{"loss": {...}, "lira": {...}}`` (lira only with shadows)."""
    logits = _logits(model, data.x)
    loss = F.cross_entropy(logits, data.y, reduction="none").numpy()
    out = {"loss": attack_metrics(-loss, data.member, delta)}
    if shadow_phi is not None and len(shadow_phi) > 1:
        mu = shadow_phi.mean(0)
        if len(shadow_phi) >= PER_EXAMPLE_STD_SHADOWS:
            sd = shadow_phi.std(0) + 1e-3
        else:
            sd = np.full_like(mu, (shadow_phi - mu).std() + 1e-3)
        out["lira"] = attack_metrics((_phi(logits, data.y) - mu) / sd, data.member, delta)
    return out


def main(argv: list[str]) -> int:
    """``fedcl audit [CONFIG.yaml] [key=value ...]``: the audit part of the privacy sweep; returns the exit code."""
    from fedcl.privacy.sweep import audit_main

    return audit_main(argv)
