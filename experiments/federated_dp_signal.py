"""How much of a DP-DM release is signal, for matching networks of several widths and depths.

    OMP_NUM_THREADS=2 .venv/bin/python experiments/federated_dp_signal.py [--root ../shared/data]

Under DP dm every real example's embedding is centred and scaled to norm 1 (``normalize``,
``center``), so what a class's release carries is the mean of those unit vectors, of squared
norm ``||mu||^2 <= 1``, while the Gaussian noise on it has squared norm ``D * s^2`` (``D`` the
embedding's dimension; ``s = noise_multiplier / (q * N_c)``, which hardly depends on ``q``: it is
computed here with Opacus's RDP accountant at ``q = 1``, about ``57.5 / N_c`` at epsilon 1, delta 1e-5,
200 steps). This prints ``||mu||^2`` (averaged over the classes of MNIST-6k and five random networks,
centred on the mean of all images) and the signal-to-noise ratio of one step for a class of
``--class-size`` images: ``||mu||^2 / (D * s^2)``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fedcl.distill.dm import class_means
from fedcl.federated.task import load_data
from fedcl.models.convnet import ConvNet
from fedcl.privacy.accounting import calibrate_noise
from fedcl.privacy.mechanism import normalize_rows


def signal(embed: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, classes: int, reps: int = 5) -> tuple[int, float]:
    """``(D, mean over classes and networks of ||mu_c||^2)`` for unit-norm centred embeddings."""
    values, dim = [], 0
    for r in range(reps):
        torch.manual_seed(r)
        with torch.no_grad():
            e = embed(x).flatten(1)
        e = normalize_rows(e - e.mean(0), 1.0)  # what the DP engine does to every real embedding
        mu = class_means(e, y, list(range(classes)))
        values.append(float((mu.norm(dim=1) ** 2).mean()))
        dim = e.shape[1]
    return dim, sum(values) / len(values)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="../shared/data")
    p.add_argument("--class-size", type=int, default=200)
    p.add_argument("--epsilon", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=200)
    args = p.parse_args()
    data = load_data("mnist", args.root)
    x, y = data.train_images, data.train_labels
    s2 = (calibrate_noise(args.epsilon, 1e-5, 1.0, args.steps) / args.class_size) ** 2
    shape = tuple(x.shape[1:])
    variants: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = [
        (f"convnet width {w} depth {d}", lambda t, w=w, d=d: ConvNet(shape, data.num_classes, width=w, depth=d).embed(t))
        for w in (8, 16, 32, 64) for d in (2, 3, 4)
    ]
    variants += [("pixels 28x28", lambda t: t), ("pixels 14x14", lambda t: F.avg_pool2d(t, 2)),
                 ("pixels 7x7", lambda t: F.avg_pool2d(t, 4))]
    print(f"| features | D | ||mu||^2 | one step's SNR at N_c = {args.class_size} |\n|---|---|---|---|")
    for name, fn in variants:
        dim, mu2 = signal(fn, x, y, data.num_classes)
        print(f"| {name} | {dim} | {mu2:.3f} | {mu2 / (dim * s2):.4f} |", flush=True)


if __name__ == "__main__":
    main()
