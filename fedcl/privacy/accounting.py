"""Privacy accounting with Opacus accountants, and validation of a ``privacy`` block.

Every DP release fedcl makes is a composition of ``steps`` applications of the
*subsampled Gaussian mechanism*: each step samples every real example independently
with probability ``sample_rate`` (Poisson sampling), clips each sampled example's
contribution to L2 norm ``max_grad_norm``, sums, and adds Gaussian noise of standard
deviation ``noise_multiplier * max_grad_norm``. Such a release is fully described by
``(noise_multiplier, sample_rate, steps)``, which is what Opacus accountants take
(``accountant.history``); this module turns those three numbers into ``epsilon`` at a
given ``delta``, and a target ``epsilon`` into a noise multiplier (Opacus's
``get_noise_multiplier``), before any real data is touched.

Public API:

- :data:`ACCOUNTANTS` -- the accountant names (``rdp``, ``prv``, ``gdp``).
- :func:`make_accountant` -- an Opacus accountant by name (PrivacyError if unknown).
- :func:`compute_epsilon` -- epsilon of ``(noise_multiplier, sample_rate, steps)`` at ``delta``.
- :func:`calibrate_noise` -- the noise multiplier that reaches a target epsilon.
- :func:`validate_privacy` -- check a :class:`PrivacyConfig` (PrivacyError on bad values).
- :func:`resolve_privacy` -- validate and compute the :class:`DPParams` of one release.
- :class:`DPParams` -- the recorded parameters (``as_dict()`` goes to ``SyntheticSet.meta["privacy"]``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from fedcl.errors import PrivacyError
from fedcl.privacy.config import PrivacyConfig

if TYPE_CHECKING:  # Opacus is imported where it is used: `import fedcl` stays fast
    from opacus.accountants import IAccountant

__all__ = ["ACCOUNTANTS", "DPParams", "calibrate_noise", "compute_epsilon", "make_accountant", "resolve_privacy",
           "validate_privacy"]

ACCOUNTANTS = ("rdp", "prv", "gdp")


def make_accountant(name: str) -> IAccountant:
    """A fresh Opacus accountant (``rdp``, ``prv`` or ``gdp``).

    Raises:
        PrivacyError: unknown name.
    """
    from opacus.accountants import create_accountant

    try:
        return create_accountant(mechanism=name)
    except ValueError:
        raise PrivacyError(f"unknown accountant {name!r}; valid: {', '.join(ACCOUNTANTS)}") from None


def compute_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                    accountant: str = "rdp") -> float:
    """Epsilon spent by ``steps`` subsampled Gaussian steps, at ``delta``, by Opacus's accountant.

    A noise multiplier of 0 (no noise) gives ``inf``; 0 steps give 0.
    """
    if steps <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    acc = make_accountant(accountant)
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    return float(acc.get_epsilon(delta=delta))


def calibrate_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                    accountant: str = "rdp") -> float:
    """The noise multiplier for which ``steps`` steps at ``sample_rate`` spend ``target_epsilon`` (Opacus).

    Raises:
        PrivacyError: the budget cannot be reached (Opacus gives up above sigma = 1e6).
    """
    from opacus.accountants.utils import get_noise_multiplier

    make_accountant(accountant)  # clear error for an unknown name
    try:
        return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                          sample_rate=sample_rate, steps=int(steps), accountant=accountant))
    except ValueError as exc:
        raise PrivacyError(f"cannot reach epsilon={target_epsilon} with {steps} steps at sample rate "
                           f"{sample_rate:.4g} ({exc}); use fewer iterations or a smaller sample rate") from None


@dataclass(frozen=True)
class DPParams:
    """Everything needed to recompute a release's epsilon: the ``privacy`` record of a run.

    Attributes:
        epsilon: epsilon spent at ``delta`` (by ``accountant``).
        delta: the delta it is stated at.
        noise_multiplier: Gaussian noise std / ``max_grad_norm``.
        sample_rate: Poisson sampling rate of each real example per step.
        steps: number of mechanism applications each example is exposed to.
        max_grad_norm: L2 clipping bound of one example's contribution.
        accountant: Opacus accountant name.
    """

    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    accountant: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``privacy`` entry of SyntheticSet.meta and metrics.json)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DPParams:
        """Inverse of :meth:`as_dict` (extra keys are ignored)."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def _positive(name: str, value: float | None, *, allow_inf: bool = False) -> None:
    if value is None:
        return
    v = float(value)
    if math.isnan(v) or v <= 0 or (math.isinf(v) and not allow_inf):
        raise PrivacyError(f"privacy.{name} must be a positive finite number, got {value}")


def validate_privacy(privacy: PrivacyConfig, num_examples: int | None = None) -> None:
    """Check a privacy block before any data is touched.

    ``delta >= 1/num_examples`` is **refused** (a mechanism that may publish one whole
    example with probability delta gives no meaningful guarantee).

    Raises:
        PrivacyError: epsilon <= 0, delta outside (0, 1) or >= 1/N, max_grad_norm <= 0,
            noise_multiplier < 0, both epsilon and noise_multiplier set, unknown
            accountant, sample_rate outside (0, 1], infinite clipping with noise, replay not
            an integer >= 0.
    """
    _positive("epsilon", privacy.epsilon)
    _positive("budget", privacy.budget)  # the owner's cap over all its releases
    if privacy.budget is not None and privacy.epsilon is not None and privacy.budget < privacy.epsilon:
        raise PrivacyError(f"privacy.budget={privacy.budget} is below privacy.epsilon={privacy.epsilon}, the target of "
                           "one release, so no release fits; use budget >= epsilon (or leave budget unset: no cap)")
    if privacy.epsilon is not None and privacy.noise_multiplier is not None:
        raise PrivacyError("set privacy.epsilon or privacy.noise_multiplier, not both "
                           f"(got {privacy.epsilon} and {privacy.noise_multiplier})")
    d = float(privacy.delta)
    if not 0.0 < d < 1.0:
        raise PrivacyError(f"privacy.delta must be in (0, 1), got {privacy.delta}")
    if num_examples is not None and d >= 1.0 / max(int(num_examples), 1):
        raise PrivacyError(f"privacy.delta={d:g} is not below 1/N = {1.0 / num_examples:.3g} for N={num_examples} "
                           f"examples; such a delta allows leaking an example outright: use delta < 1/N "
                           f"(e.g. {10 ** math.floor(math.log10(0.1 / num_examples)):g})")
    mgn = float(privacy.max_grad_norm)
    if math.isnan(mgn) or mgn <= 0:
        raise PrivacyError(f"privacy.max_grad_norm (the clipping bound) must be > 0, got {privacy.max_grad_norm}")
    if privacy.noise_multiplier is not None:
        nm = float(privacy.noise_multiplier)
        if math.isnan(nm) or nm < 0 or math.isinf(nm):
            raise PrivacyError(f"privacy.noise_multiplier must be a finite number >= 0, got {privacy.noise_multiplier}")
        if math.isinf(mgn) and nm > 0:
            raise PrivacyError("privacy.max_grad_norm=inf (no clipping) only makes sense with noise_multiplier=0")
    elif math.isinf(mgn) and privacy.enabled:
        raise PrivacyError("privacy.max_grad_norm must be finite to calibrate noise to a target epsilon")
    if privacy.accountant not in ACCOUNTANTS:
        raise PrivacyError(f"unknown accountant {privacy.accountant!r}; valid: {', '.join(ACCOUNTANTS)}")
    if privacy.sample_rate is not None:
        q = float(privacy.sample_rate)
        if math.isnan(q) or not 0.0 < q <= 1.0:
            raise PrivacyError(f"privacy.sample_rate must be in (0, 1], got {privacy.sample_rate}")
    if int(privacy.replay) != privacy.replay or privacy.replay < 0:
        raise PrivacyError(f"privacy.replay must be an integer >= 0 (0: no replay), got {privacy.replay}")


def resolve_privacy(privacy: PrivacyConfig, *, sample_rate: float, steps: int,
                    num_examples: int | None = None) -> DPParams:
    """Validate ``privacy`` and compute the parameters of a release of ``steps`` steps.

    With ``privacy.epsilon`` the noise multiplier is calibrated (Opacus); with
    ``privacy.noise_multiplier`` the epsilon is computed. ``privacy.sample_rate``, when
    set, overrides ``sample_rate``. Touches no data.

    Raises:
        PrivacyError: see :func:`validate_privacy`; also when ``privacy`` is not enabled.
    """
    if not privacy.enabled:
        raise PrivacyError("this privacy block is not enabled: set privacy.epsilon or privacy.noise_multiplier")
    validate_privacy(privacy, num_examples)
    q = float(privacy.sample_rate if privacy.sample_rate is not None else sample_rate)
    if not 0.0 < q <= 1.0:
        raise PrivacyError(f"sample rate must be in (0, 1], got {q}")
    steps = int(steps)
    if steps < 1:
        raise PrivacyError(f"a DP release needs at least one step, got {steps}")
    if privacy.noise_multiplier is not None:
        nm = float(privacy.noise_multiplier)
        if nm == 0:
            warnings.warn("privacy.noise_multiplier=0: no noise is added, epsilon is infinite (not private)",
                          stacklevel=2)
    else:
        nm = calibrate_noise(float(privacy.epsilon), float(privacy.delta), q, steps, privacy.accountant)
    eps = compute_epsilon(nm, q, steps, float(privacy.delta), privacy.accountant)
    return DPParams(epsilon=eps, delta=float(privacy.delta), noise_multiplier=nm, sample_rate=q, steps=steps,
                    max_grad_norm=float(privacy.max_grad_norm), accountant=privacy.accountant)
