"""Public auxiliary images for DP distillation (``privacy.public``).

A DP release may use data that is already public at no privacy cost: the guarantee covers
the private records only. Dosser (Zheng et al., ICCV 2025) learns the subspace in which its
private signals are matched from such auxiliary data. fedcl's ``dm`` engine does the same when
``privacy.subspace`` and ``privacy.public`` are both set: each private step's basis is the top
principal directions of the public images' embeddings in that step's (public, random) network.
The public images never enter the synthetic set or the released targets themselves.

Whether an auxiliary set may count as public is the user's decision, and a strong one when it
comes from the same task (the bundled scikit-learn ``digits`` for MNIST, say): results made
with it must say so.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from fedcl.errors import PrivacyError

__all__ = ["public_images"]


def public_images(name: str, shape: Sequence[int], mean: Sequence[float], std: Sequence[float], *,
                  fill: float = 1.0, root: str | None = None) -> torch.Tensor:
    """The training images of dataset ``name``, brought to the private data's shape and normalisation.

    Each image is taken back to pixel values in ``[0, 1]`` (with its own dataset's mean and
    std), its channels averaged or repeated to ``shape[0]``, resized bilinearly to ``fill`` of
    the private height and width, centred on a zero (black) frame of the full size, and
    normalised with the private ``mean`` and ``std``. ``fill`` 20/28 matches MNIST's layout,
    whose digits fill a 20x20 box of a 28x28 frame.

    Args:
        name: a registered dataset (``digits`` is bundled).
        shape: the private images' ``(C, H, W)``.
        mean, std: the private dataset's per-channel normalisation.
        fill: the fraction of the frame the resized images cover, in ``(0, 1]``.
        root: data folder of ``name`` (unused by ``digits``).

    Raises:
        PrivacyError: ``fill`` out of range, or a dataset that cannot be loaded.
    """
    from fedcl.data import load_dataset

    if not 0.0 < float(fill) <= 1.0:
        raise PrivacyError(f"privacy.public_fill must be in (0, 1], got {fill}")
    try:
        data = load_dataset(name, root)
    except Exception as exc:  # unknown name, missing files: one clear error
        raise PrivacyError(f"privacy.public={name!r} cannot be loaded: {exc}") from None
    c, h, w = (int(v) for v in shape)
    x = data.train_images * torch.tensor(data.std).view(1, -1, 1, 1) + torch.tensor(data.mean).view(1, -1, 1, 1)
    x = x.clamp(0.0, 1.0)
    if x.shape[1] != c:
        x = x.mean(1, keepdim=True).expand(-1, c, -1, -1)
    ih, iw = max(1, round(h * float(fill))), max(1, round(w * float(fill)))
    x = F.interpolate(x, size=(ih, iw), mode="bilinear", align_corners=False)
    top, left = (h - ih) // 2, (w - iw) // 2
    x = F.pad(x, (left, w - iw - left, top, h - ih - top))
    return ((x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)).contiguous()
