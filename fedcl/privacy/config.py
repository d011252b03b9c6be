"""The privacy settings a DP release is made with (the ``privacy`` config block)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SCHEDULES", "PrivacyConfig"]

SCHEDULES = ("constant", "cosine")  # privacy.schedule: the synthetic images' learning rate over a dm run


@dataclass
class PrivacyConfig:
    """DP-SGD-style mechanism settings.

    DP is on when ``epsilon`` or ``noise_multiplier`` is set; with both unset the
    release is not private.

    Attributes:
        epsilon: target epsilon; the noise multiplier is calibrated to reach it.
        delta: target delta.
        max_grad_norm: L2 clipping bound of each example's contribution.
        noise_multiplier: Gaussian noise std as a multiple of ``max_grad_norm`` (instead of ``epsilon``).
        accountant: Opacus accountant: ``rdp``, ``prv`` or ``gdp``.
        secure_mode: use Opacus's cryptographically secure noise.
        sample_rate: Poisson sampling rate of real examples per step; None picks
            ``batch_real / class size``.
        normalize: ``dm`` only: scale every real (and synthetic) embedding to norm exactly
            ``max_grad_norm`` instead of only clipping it (same sensitivity; every example
            then contributes the full bound, so the signal is as large as the noise allows).
        center: ``dm`` only: subtract, before clipping, the mean embedding of the current
            synthetic set (a function of earlier releases only) from every embedding, so the
            clipped contributions carry what tells the classes apart rather than the large
            component all images share.
        pool: ``dm`` only: match spatially averaged features (``width`` numbers per network
            instead of ``width * h * w``): the noise norm grows with the square root of the
            dimension while the clipped signal does not, so fewer dimensions, less noise.
        replay: ``dm`` only: after the private steps, this many more passes over the stored
            (network, augmentation, noisy target) triples, one image update each. Pure
            post-processing of released values: more optimisation, no extra privacy cost.
        clamp: ``dm`` only: after every image update, project the synthetic images onto the
            valid pixel range (``[0, 1]`` before the dataset's normalisation; needs ``mean``
            and ``std`` in the set's metadata). Post-processing, no privacy cost. Noisy
            targets that no image can reach (a small data owner's) otherwise pull the images
            without bound. Off by default: on federated MNIST at epsilon 1 it cost accuracy
            (experiments/results/federated.md).
        downsample: ``dm`` only: parameterise each synthetic image at ``1/downsample`` of its
            height and width, upsampled bilinearly to full size for every match (1: full
            resolution). The noisy targets of a small class cannot then be fitted by pixel-level
            noise texture. Post-processing, no privacy cost. 1 by default: at 2 the federated
            MNIST summaries at epsilon 1 lost accuracy (experiments/results/federated.md).
        subspace: ``dm`` only: if > 0, each private step projects every (centred) embedding onto the
            top ``subspace`` principal directions of the current synthetic images' embeddings in that
            step's network before clipping, so the noise lives in that many dimensions instead of
            the embedding's. The basis is a function of the synthetic images (earlier releases) and the
            public network only, so it costs no privacy; with ``public`` it comes from public images
            instead, as in Dosser. 0 (off) by default: on federated MNIST at epsilon 1 it lost
            accuracy with either basis (experiments/results/federated.md): what the projection
            leaves out costs more than the noise it removes.
        subspace_below: with ``subspace``, project only the classes of fewer than this many examples
            (whose means are the noisiest); larger classes keep every dimension. 0: every class.
        public: with ``subspace``, a registered dataset taken as *public* auxiliary data: each
            private step's basis is the top principal directions of its images' embeddings
            (about the synthetic reference) instead of the synthetic images', as in Dosser. No
            privacy cost for the private data; calling a dataset public is the user's claim
            (see :mod:`fedcl.privacy.public`). Each private step embeds 512 of its training
            images, drawn at random; it is loaded from ``$FEDCL_DATA`` or ``./data`` (``digits``
            is bundled). "" (default): no public data.
        public_fill: the fraction of the frame the public images are resized to (20/28 puts
            ``digits`` in MNIST's layout).
        schedule: ``dm`` only: the synthetic images' learning rate over the private steps and the
            replay passes, ``constant`` (the default) or ``cosine`` (from the engine's ``lr_img`` down
            to 0). With cosine the last updates barely move the images, so they end near where all
            the noisy targets together put them rather than pulled towards the last few. An
            optimisation setting, no privacy cost. The images also end about a quarter smaller,
            which matters to a server that adds noise of a fixed size (``server_noise``). Constant
            by default: on federated MNIST at epsilon 1 cosine moved the server's accuracy by
            several points on single seeds, both ways, and by nothing on average over fourteen
            (experiments/results/federated.md, seventeenth session).
    """

    epsilon: float | None = None
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None
    accountant: str = "rdp"
    secure_mode: bool = False
    sample_rate: float | None = None
    normalize: bool = True
    center: bool = True
    pool: bool = False
    replay: int = 4
    clamp: bool = False
    downsample: int = 1
    subspace: int = 0
    subspace_below: int = 0
    public: str = ""
    public_fill: float = 1.0
    schedule: str = "constant"
    budget: float | None = None

    @property
    def enabled(self) -> bool:
        """True when this block asks for a DP release."""
        return self.epsilon is not None or self.noise_multiplier is not None
