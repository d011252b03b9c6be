"""The DP mechanism of distillation: Poisson sampling, per-example clipping, Gaussian noise.

One step of the mechanism, applied to the real examples of one class ``c`` (``N_c`` of them):

1. **Poisson sampling**: every example is taken independently with probability ``q``
   (``sample_rate``); the batch size is random, its expectation is ``q * N_c``.
2. **Clipping**: each sampled example's contribution ``v_i`` (its embedding for ``dm``,
   its whole flattened parameter gradient for ``gm``/``dsa``, computed per sample by
   Opacus's ``GradSampleModule``) is scaled to L2 norm at most ``C = max_grad_norm``.
3. **Noise**: the clipped contributions are summed and Gaussian noise of standard
   deviation ``noise_multiplier * C`` is added to every coordinate.
4. The noisy sum is divided by the *expected* batch size ``q * N_c`` (a constant, so this
   is post-processing; class sizes are treated as public, as Opacus treats the dataset size).

For ``dm`` the contribution may be *normalised* (scaled to norm exactly ``C``, a clip whose
bound is always reached) and *centred* first (``v_i - r`` with ``r`` the mean embedding of
the current synthetic set under the same network: ``r`` depends only on earlier releases and
public randomness, so the sensitivity is still ``C``). See :mod:`fedcl.privacy.access`.

This is exactly the subsampled Gaussian mechanism of DP-SGD, so Opacus accountants
(:mod:`fedcl.privacy.accounting`) bound its privacy loss.

**How classes compose.** Every example belongs to exactly one class and an iteration
queries each class once, on that class's data only. Adding or removing one example
changes only its own class's query, so the classes of one iteration compose in
*parallel*: one iteration costs each example one subsampled Gaussian step with rate
``q``, not ``num_classes`` of them. ``T`` steps compose adaptively (each step may depend
on the previous noisy outputs), which the RDP/PRV/GDP accountants account for: the run is
recorded as ``(noise_multiplier, q, T)``.

**Why the whole synthetic set is (epsilon, delta)-DP.** The synthetic images start from
noise (a DP run never copies real images in: ``init`` defaults to ``noise`` under DP and
``init="real"`` is refused), the matching networks and augmentations are drawn independently of
the data, and the synthetic side of every loss uses no real data. The *only* access to real
data is :class:`fedcl.privacy.access.PrivateAccess`, which applies the mechanism above (every
engine reads real data through the access it is handed, :mod:`fedcl.distill.access`);
everything else -- the optimiser, the synthetic-side embeddings or gradients, the final images,
any model trained on them -- is post-processing of its noisy outputs, which cannot increase
epsilon. This includes ``dm``'s *replay* passes, which reuse released noisy targets without
reading real data.

**Normalisation layers.** Per-example contributions must not depend on other examples
of the batch. BatchNorm in training mode mixes the batch, so a network that Opacus's
``ModuleValidator`` rejects is converted with ``ModuleValidator.fix`` (BatchNorm ->
GroupNorm) and a warning says so. The default ConvNet (instance norm) needs no change.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from opacus.grad_sample import GradSampleModule
from opacus.optimizers.optimizer import _generate_noise
from opacus.validators import ModuleValidator
from torch import nn

from fedcl.errors import PrivacyError
from fedcl.privacy.accounting import DPParams

__all__ = ["GaussianMechanism", "bound_rows", "clip_rows", "normalize_rows", "private_network"]


def clip_rows(v: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale each row of ``v`` (``(B, D)``) to L2 norm at most ``max_norm`` (``inf``: unchanged)."""
    if max_norm == float("inf"):
        return v
    norms = v.norm(dim=1, keepdim=True)
    factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    return v * factor


def normalize_rows(v: torch.Tensor, norm: float) -> torch.Tensor:
    """Scale each row of ``v`` to L2 norm ``norm`` (a zero row stays zero): a clip whose bound is always reached."""
    if norm == float("inf"):
        return v
    # clamp_min, not "+ eps": an additive eps leaves small rows measurably short of the bound
    return v * (norm / v.norm(dim=1, keepdim=True).clamp_min(1e-12))


def bound_rows(v: torch.Tensor, bound: float, *, normalize: bool = False) -> torch.Tensor:
    """Each row of ``v`` brought within L2 norm ``bound``: :func:`normalize_rows` (exactly ``bound``)
    with ``normalize``, else :func:`clip_rows` (at most ``bound``); ``inf`` leaves ``v`` unchanged."""
    return normalize_rows(v, bound) if normalize else clip_rows(v, bound)


def private_network(net: nn.Module, *, warn: bool = True) -> nn.Module:
    """``net`` if Opacus accepts it for per-example computation, else ``ModuleValidator.fix(net)``.

    The conversion replaces BatchNorm with GroupNorm (it mixes examples in a batch,
    breaking the per-example sensitivity bound); ``warn`` says so once per call. In-place
    activations are switched to out-of-place (same function; Opacus's hooks need it).
    """
    for m in net.modules():  # in-place activations break Opacus's backward hooks (view + inplace)
        if getattr(m, "inplace", False):
            m.inplace = False
    if ModuleValidator.is_valid(net):
        return net
    fixed = ModuleValidator.fix(net)
    if not ModuleValidator.is_valid(fixed):
        errors = "; ".join(str(e) for e in ModuleValidator.validate(fixed, strict=False))
        raise PrivacyError(f"this model cannot be used under DP even after Opacus's ModuleValidator.fix: {errors}")
    if warn:
        warnings.warn("DP: the matching network has layers that mix examples (BatchNorm); Opacus's "
                      "ModuleValidator.fix replaced them with GroupNorm. Use norm='instancenorm' to avoid this.",
                      stacklevel=2)
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    return fixed.to(device)


class GaussianMechanism:
    """Poisson sampling + per-example clipping + Gaussian noise, with its own random stream.

    Args:
        params: the release's parameters (noise multiplier, sample rate, clipping bound ...).
        seed: seeds the sampling/noise generator (reproducible runs); ignored in secure mode.
        secure_mode: draw sampling and noise from a CSPRNG (needs ``torchcsprng``, as Opacus)
            with Opacus's floating-point-attack-resistant noise.

    Raises:
        PrivacyError: secure mode asked for without ``torchcsprng``.
    """

    def __init__(self, params: DPParams, *, seed: int = 0, secure_mode: bool = False) -> None:
        self.params = params
        self.secure_mode = secure_mode
        if secure_mode:
            try:
                import torchcsprng as csprng  # type: ignore[import-not-found]
            except ImportError:
                raise PrivacyError("privacy.secure_mode=true needs the torchcsprng package (as Opacus does); "
                                   "install it or set privacy.secure_mode=false") from None
            self.generator = csprng.create_random_device_generator("/dev/urandom")
        else:
            # a stream of its own: the engine's generator is left as in a non-DP run
            self.generator = torch.Generator().manual_seed(0x5EED_D9 + int(seed))

    @property
    def noise_std(self) -> float:
        """Standard deviation of the noise added to a clipped sum: ``noise_multiplier * max_grad_norm``."""
        nm = self.params.noise_multiplier
        return 0.0 if nm == 0 else nm * self.params.max_grad_norm

    def sample(self, n: int) -> torch.Tensor:
        """Poisson sampling: indices (CPU, int64) of the examples among ``n`` taken at this step."""
        return (torch.rand(n, generator=self.generator) < self.params.sample_rate).nonzero().flatten()

    def noise(self, shape: tuple[int, ...] | torch.Size, reference: torch.Tensor) -> torch.Tensor:
        """Gaussian noise of std :attr:`noise_std`, on ``reference``'s device and dtype."""
        z = _generate_noise(self.noise_std, torch.empty(shape, dtype=reference.dtype), self.generator,
                            self.secure_mode)
        return z.to(reference.device)

    def noisy_class_sums(self, contributions: torch.Tensor, rows: torch.Tensor, num_groups: int, *,
                         normalize: bool = False) -> torch.Tensor:
        """Clip each row of ``contributions`` (``(B, D)``), sum per group ``rows`` (``(B,)``), add noise.

        ``normalize`` scales every row to norm exactly ``max_grad_norm`` (still at most the
        bound, so the sensitivity and the accounting are unchanged).

        Returns:
            ``(num_groups, D)``: one noisy clipped sum per group (class).
        """
        clipped = bound_rows(contributions, self.params.max_grad_norm, normalize=normalize)
        sums = clipped.new_zeros(num_groups, clipped.shape[1]).index_add_(0, rows, clipped)
        return sums + self.noise(sums.shape, sums)

    def private_means(self, contributions: torch.Tensor, rows: torch.Tensor, expected_sizes: torch.Tensor, *,
                      normalize: bool = False) -> torch.Tensor:
        """Noisy clipped sums per group divided by each group's expected batch size ``q * N_c``."""
        sums = self.noisy_class_sums(contributions, rows, len(expected_sizes), normalize=normalize)
        return sums / expected_sizes.to(sums)[:, None]

    def private_gradient(self, net: nn.Module, params: list[nn.Parameter], loss_fn: Callable[[torch.Tensor,
                         torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                         expected_size: float) -> list[torch.Tensor]:
        """DP-SGD gradient of one class batch: per-sample grads (Opacus), clipped, summed, noised, / q*N_c.

        Args:
            net: the network (wrapped in a ``GradSampleModule`` for this call only).
            params: the parameters whose gradient is released.
            loss_fn: per-batch loss with ``reduction="sum"`` (``loss_fn(logits, y)``).
            x, y: the Poisson-sampled batch (may be empty).
            expected_size: ``q * N_c``.

        Returns:
            One tensor per parameter, shaped like it.
        """
        flat: torch.Tensor | None = None
        if len(x):
            # functorch mode: with torch 2.15 / opacus 1.6 the hook-based Conv2d grad sampler returns
            # zeros for convs after the first one (tested in test_privacy_mechanism.py)
            gsm = GradSampleModule(net, loss_reduction="sum", force_functorch=True)
            try:
                with warnings.catch_warnings():  # torch's note that the first layer's input needs no gradient
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    loss_fn(gsm(x), y).backward()
                flat = torch.cat([p.grad_sample.reshape(len(x), -1) for p in params], dim=1)
            finally:
                gsm._close()  # removes the hooks and the grad_sample attributes
                for p in params:
                    p.grad = None
        numel = sum(p.numel() for p in params)
        if flat is None:  # empty Poisson batch: the release is pure noise
            flat = params[0].new_zeros(0, numel)
        rows = torch.zeros(len(flat), dtype=torch.long, device=flat.device)
        total = self.noisy_class_sums(flat.detach(), rows, 1)[0] / float(expected_size)
        return [g.view_as(p) for g, p in zip(total.split([p.numel() for p in params]), params, strict=True)]
