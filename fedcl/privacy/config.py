"""The privacy settings a DP release is made with (the ``privacy`` config block)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from fedcl.distill.access import RealAccess
    from fedcl.distill.base import ClassData, Distiller

__all__ = ["PrivacyConfig"]


@dataclass
class PrivacyConfig:
    """DP-SGD-style mechanism settings.

    Every per-example row an engine averages through the private access (dm's embeddings, kip's
    and frepo's head gradients) is scaled to norm exactly ``max_grad_norm``; per-sample gradients
    (gm, dsa, mtt's experts) are clipped to it. Scaling is clipping whose bound is always reached
    (the same sensitivity); against plain clipping it measured level (DP dm, MNIST-6k, epsilon 1,
    validation: 91.6 against 91.4, experiments/results/dp_utility_mnist.md), so it is not an option.

    DP is on when ``epsilon`` or ``noise_multiplier`` is set; with both unset the
    release is not private.

    Attributes:
        epsilon: target epsilon; the noise multiplier is calibrated to reach it.
        budget: cap on the data owner's total epsilon over all its releases, composed by its
            :class:`~fedcl.privacy.ledger.PrivacyLedger`; a release that would exceed it is refused
            before any data is read. None: no cap (the total is still accounted and reported).
        delta: target delta.
        max_grad_norm: L2 clipping bound of each example's contribution.
        noise_multiplier: Gaussian noise std as a multiple of ``max_grad_norm`` (instead of ``epsilon``).
        accountant: Opacus accountant: ``rdp``, ``prv`` or ``gdp``.
        secure_mode: use Opacus's cryptographically secure noise.
        sample_rate: Poisson sampling rate of real examples per step; None picks
            ``batch_real * K / N`` (K classes, N examples), so a class's expected batch is
            ``batch_real`` when classes are balanced.
        center: ``dm`` only: subtract, before clipping, the mean embedding of the current
            synthetic set (a function of earlier releases only) from every embedding, so the
            clipped contributions carry what tells the classes apart rather than the large
            component all images share.
        replay: ``dm`` only: after the private steps, this many more passes over the stored
            (network, augmentation, noisy target) triples, one image update each. Pure
            post-processing of released values: more optimisation, no extra privacy cost.
    """

    epsilon: float | None = None
    budget: float | None = None
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None
    accountant: str = "rdp"
    secure_mode: bool = False
    sample_rate: float | None = None
    center: bool = True
    replay: int = 4

    @property
    def enabled(self) -> bool:
        """True when this block asks for a DP release."""
        return self.epsilon is not None or self.noise_multiplier is not None

    def open_access(self, engine: Distiller, real: ClassData, classes: list[int], ipc: int,
                    gen: torch.Generator) -> RealAccess:
        """The private real-data access of one release (validated and calibrated before any image is read).

        This is how :class:`~fedcl.distill.Distiller` makes any engine DP without importing
        :mod:`fedcl.privacy` (see :class:`fedcl.distill.access.PrivacyPolicy`).
        """
        from fedcl.privacy.access import PrivateAccess

        return PrivateAccess(self, engine, real, classes, ipc)
