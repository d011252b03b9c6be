"""The private real-data access: the one place where a DP release reads real data.

:class:`PrivateAccess` implements the core's :class:`~fedcl.distill.access.RealAccess`
interface with the subsampled Gaussian mechanism (:mod:`fedcl.privacy.mechanism`), so every
engine written against that interface (``dm``, ``gm``, ``dsa``, ...) is DP without a DP copy of
its loop. At each :meth:`~PrivateAccess.step` every real example is Poisson-sampled once; the
engine then reads each class at most once in that step, and each read is released as a noisy
mean: per-example contributions clipped (or normalised) to ``max_grad_norm``, summed, Gaussian
noise of std ``noise_multiplier * max_grad_norm`` added, divided by the class's expected batch
``q * N_c``. Classes hold disjoint examples, so the reads of one step compose in parallel: one
step costs every example one subsampled Gaussian step. Each step is recorded with an Opacus
accountant as it happens, and the release's record (:meth:`~PrivateAccess.record`) is read off
that accountant, so a run that took more steps than planned cannot report the planned epsilon.

Public API: :func:`plan_release` (the :class:`~fedcl.privacy.accounting.DPParams` a run will
have, computed before any data is touched, e.g. for a :class:`~fedcl.privacy.ledger.PrivacyLedger`
check) and :class:`PrivateAccess` (built by :meth:`fedcl.privacy.PrivacyConfig.open_access`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from fedcl.distill.access import RealAccess, RealBatch, RowFn, Transform
from fedcl.errors import PrivacyError
from fedcl.privacy.accounting import DPParams, make_accountant, resolve_privacy
from fedcl.privacy.config import PrivacyConfig
from fedcl.privacy.mechanism import GaussianMechanism, bound_rows, private_network

if TYPE_CHECKING:
    from fedcl.distill.base import ClassData, Distiller

__all__ = ["PrivateAccess", "plan_release"]


def plan_release(engine: Distiller, class_counts: Sequence[int], ipc: int, privacy: PrivacyConfig) -> DPParams:
    """The DP parameters ``engine`` will use on data with these class sizes (no data touched).

    The sample rate and the steps are the engine's :meth:`~fedcl.distill.Distiller.release_plan`:
    by default ``batch_real * K / N`` (K classes, N examples; capped at 1), the same for every
    class, so each class's expected batch is ``q * N_c`` (``batch_real`` for balanced classes),
    over :meth:`~fedcl.distill.Distiller.release_steps` steps (``iterations``; times
    ``outer_loop`` for gm/dsa; ``mtt``: every SGD step of its experts).

    Raises:
        PrivacyError: invalid privacy block, or a budget that cannot be reached.
    """
    counts = [int(c) for c in class_counts if int(c) > 0]
    q, steps = engine.release_plan(counts, ipc)
    return resolve_privacy(privacy, sample_rate=q, steps=steps, num_examples=sum(counts))


def _sum_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="sum")


class PrivateAccess(RealAccess):
    """Real data through the subsampled Gaussian mechanism (see the module docstring).

    Args:
        privacy: the release's privacy block.
        engine: the engine that reads (its ``batch_real``, steps and ``seed`` plan the release).
        real: the real data, grouped by class.
        classes: the classes being distilled.
        ipc: images per class of the release (gm/dsa: sets the steps per iteration).

    Raises:
        PrivacyError: the block is invalid or its budget cannot be reached (nothing read yet).
    """

    private = True
    prefix = "dp-"

    def __init__(self, privacy: PrivacyConfig, engine: Distiller, real: ClassData, classes: list[int],
                 ipc: int) -> None:
        super().__init__(real, classes, getattr(engine, "batch_real", 256), torch.Generator())
        counts = real.counts[torch.tensor(self.classes)]
        self.params = plan_release(engine, counts.tolist(), ipc, privacy)
        self.mech = GaussianMechanism(self.params, seed=engine.release_seed, secure_mode=privacy.secure_mode)
        self.secure_mode = bool(privacy.secure_mode)
        self.centred = bool(privacy.center)
        self.replay = int(privacy.replay)
        # class label -> row of this release's classes; each class's expected Poisson batch q * N_c
        self.group = torch.full((real.num_classes,), -1, dtype=torch.long, device=real.device)
        self.group[torch.tensor(self.classes, device=real.device)] = torch.arange(len(self.classes), device=real.device)
        self.expected = self.params.sample_rate * counts.double()
        self.accountant = make_accountant(self.params.accountant)
        self.idx: torch.Tensor | None = None
        self.read: set[int] = set()

    def network(self, net: nn.Module, first: bool = False) -> nn.Module:
        """``net`` made safe for per-example computation (BatchNorm replaced, with a warning on the first)."""
        return private_network(net, warn=first)

    def step(self) -> None:
        """Poisson-sample every real example for this step and record the step with the accountant."""
        if self.steps >= self.params.steps:
            raise PrivacyError(f"the engine asked for more than the {self.params.steps} private steps its release "
                               f"was planned and calibrated for; nothing more is read")
        super().step()
        self.accountant.step(noise_multiplier=self.params.noise_multiplier, sample_rate=self.params.sample_rate)
        self.idx = self.mech.sample(len(self.real.labels)).to(self.real.device)
        self.read = set()

    def batch(self, classes: Sequence[int] | None = None) -> RealBatch:
        """This step's Poisson sample of ``classes``; each class may be drawn once per step."""
        if self.idx is None:
            raise PrivacyError("a private access is read only inside a step (call step() first)")
        classes = self.classes if classes is None else list(classes)
        if self.read & set(classes):
            raise PrivacyError(f"classes {sorted(self.read & set(classes))} were already read in this private step")
        self.read |= set(classes)
        keep = torch.isin(self.real.labels[self.idx], torch.tensor(classes, device=self.real.device))
        sel = self.idx[keep]
        return RealBatch(self.real.images[sel], self.real.labels[sel], tuple(classes))

    def bound(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows scaled to norm ``max_grad_norm``, as the real ones are."""
        return bound_rows(rows, self.params.max_grad_norm, normalize=True)

    def class_means(self, batch: RealBatch, f: RowFn, classes: Sequence[int]) -> torch.Tensor:
        """Per class, the noisy mean of the rows ``f(x, y)`` scaled to norm ``max_grad_norm``: noisy sum / (q * N_c)."""
        with torch.no_grad():
            x = batch.images
            if len(x):
                rows = f(x, batch.labels).float()
            else:  # an empty Poisson sample: a pure-noise release; one zero image gives the rows' width
                rows = f(self.real.images[:1] * 0, self.real.labels[:1]).float()[:0]
            groups = self.group[batch.labels]
            sel = torch.tensor([self.classes.index(c) for c in classes], device=rows.device)
            means = self.mech.private_means(rows, groups, self.expected, normalize=True)
            return means[sel]

    def mean_gradient(self, batch: RealBatch, net: nn.Module, params: list[nn.Parameter],
                      transform: Transform | None = None) -> list[torch.Tensor]:
        """DP-SGD gradient of the batch: per-sample gradients clipped, summed, noised once, divided by the
        batch's expected size (``q * N_c`` for one class, as gm/dsa draw; ``q`` times the examples of
        all its classes for a batch of several, as DP-SGD experts draw). Each example is in at most one
        read per step, so either way a step costs it one subsampled Gaussian step."""
        x = transform(batch.images) if transform is not None and len(batch.images) else batch.images
        expected = float(sum(float(self.expected[self.classes.index(c)]) for c in batch.classes))
        return self.mech.private_gradient(net, params, _sum_ce, x, batch.labels, expected)

    def planned(self) -> dict[str, Any]:
        """The planned parameters (calibrated before any read) and whether the noise is secure-mode."""
        return {**self.params.as_dict(), "secure_mode": self.secure_mode}

    def record(self) -> dict[str, Any]:
        """The release's privacy record: its parameters with the steps taken and the epsilon spent,
        as the accountant that saw every step computes them."""
        steps = self.steps
        eps = float(self.accountant.get_epsilon(delta=self.params.delta)) if steps else 0.0
        return replace(self.params, steps=steps, epsilon=eps).as_dict()
