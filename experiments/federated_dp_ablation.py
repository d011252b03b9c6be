"""DP one-shot summaries on MNIST-6k, in process: what the server does with noisy summaries.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/federated_dp_ablation.py --seed 1 \
        --server plain noise2.0 "noise2.0#1" [--set accountant=prv] [--tag NAME]

The clients of ``configs/federated/dp_oneshot_mnist.yaml`` (10 clients, Dirichlet 0.1, DP dm at
epsilon 1 per client, the same client seeds as the Flower app) distil their partitions one after
the other in this process (no Ray: the same functions the ClientApp calls), the union of their
summaries is cached under ``--cache``, and the server's training is tried several ways on it:

- ``plain``: the app's ``train_global`` (DSA, ``server_epochs``);
- ``noiseS``: the same with ``server_noise=S`` (Gaussian noise on every training image);
- ``noiseA~B``: noise of std ``A`` until the server's learning rate falls tenfold (half-way), then
  ``B``: the app's ``server_noise=A server_noise_decay=B/A`` (the eighteenth session's prototype of that
  option, which it reproduces bitwise);
- ``half``: only the summaries of holders with at least half the largest holder's class size;
- ``rep``: each summary image repeated ``round(3 (n / n_max)^2)`` times (inverse-variance weights);
- ``blurB/MODE``: MODE on the summaries blurred by a Gaussian of std ``B`` pixels (a low-pass filter);
- ``rblurB/MODE``: MODE with every server batch blurred by a Gaussian of std uniform in ``[0, B]``
  (an augmentation of all images alike, after DSA);
- ``rnoiseF``: the server's training with Gaussian noise of std F times each image's own standard
  deviation, after DSA (where ``noiseS`` adds the same std S to every image);
- ``stdR/MODE``: MODE on the summaries with every image standardised to mean 0 and std ``R``
  (the matching ConvNet's instance norm makes its embedding blind to an image's scale, so the
  scale the images end at is an accident of the optimisation);
- ``gscaleR/MODE``: MODE on the summaries all scaled by one factor, so that the median of their
  images' standard deviations is ``R`` (their relative scales kept);
- ``powB/MODE``: MODE on the summaries with image ``i`` scaled to std ``5 (s_i / m)^B`` (``s_i`` its
  std, ``m`` their median): the server's noise, relative to an image, then goes as ``s_i^-B``;
- ``pcaK/MODE``: MODE on the summaries projected onto the top ``K`` principal components of the
  summaries of holders of at least 400 images of their class (a denoiser learnt from the clean ones);
- ``MODE+lsA``: MODE with label smoothing ``A`` (soft targets ``(1 - A) one_hot + A / K``);
- ``MODE+selR``: MODE on the summaries that ``fedcl.federated.select.select_summaries`` keeps at
  ``max_ratio=R`` (per class, the clients whose images are at most R times as rough as the smoothest);
- ``kdK/MODE``: MODE with the app's ``server_teachers=K`` (``fedcl.federated.task.train_teachers``):
  K models trained with MODE on their own seeds, then MODE's own draw trained on the mean of their
  softmaxes for each augmented batch (knowledge distillation of the ensemble into one model); the
  record holds the teachers' and the ensemble's accuracy too;

``MODE#k`` trains with seed offset ``k`` (another draw of the server's training randomness).
``--init-scale`` multiplies the DP engine's noise initialisation. One JSON line per server run
goes to ``--out`` (accuracy, accuracy per class, images, seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from fedcl.data import ImageData
from fedcl.federated.select import select_summaries
from fedcl.federated.task import (
    TaskSettings,
    client_seed,
    distill_partition,
    load_data,
    load_partition,
    make_model,
    mean_softmax,
    standardize_images,
    train_global,
    train_teachers,
)
from fedcl.train import accuracy, class_accuracy, predict

BASE = dict(dataset="mnist", partition="dirichlet", alpha=0.1, ipc=10, width=32, iterations=200, batch_real=64,
            dp_lr_img=100.0, dp_min_class_images=100, server_epochs=1000, epsilon=1.0, delta=1e-5, max_grad_norm=1.0,
            dp_replay=9)


def _value(name: str, text: str) -> object:
    default = getattr(TaskSettings, name)
    return text == "true" if isinstance(default, bool) else type(default)(text)


def settings(seed: int, root: str, overrides: list[str], **base: object) -> TaskSettings:
    """``BASE`` (updated by ``base``) for ``seed`` and ``root``, then ``overrides`` (``key=value``, snake_case)."""
    kw = {**BASE, **base, "seed": seed, "data_root": root}
    for item in overrides:
        key, _, text = item.partition("=")
        kw[key] = _value(key, text)
    return TaskSettings(**kw)


def add_cache_args(p: argparse.ArgumentParser) -> None:
    """The options every script on this cache shares: ``--seed``, ``--root``, ``--tag``, ``--cache``, ``--out``."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", default="../shared/data")
    p.add_argument("--tag", default="base")
    p.add_argument("--cache", default="/tmp/fedcl_dp_ablation")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "federated_dp_ablation.jsonl"))


def cache_file(cache: str, tag: str, seed: int) -> Path:
    """Where the union of the clients' summaries of ``tag`` and ``seed`` is cached under ``cache``."""
    return Path(cache) / f"{tag}_seed{seed}.pt"


def summaries(s: TaskSettings, num_clients: int, noise_multiplier: float | None = None) -> dict[str, torch.Tensor]:
    """Every client's DP summary, as the ClientApp makes it (seeds included), and its class counts.

    ``noise_multiplier`` replaces the calibration to ``epsilon`` (0: the same engine without noise,
    not private: a diagnostic of what the noise costs)."""
    data = load_data(s.dataset, s.data_root)
    privacy = s.privacy_config()
    if noise_multiplier is not None:
        privacy = dataclasses.replace(privacy, epsilon=None, noise_multiplier=noise_multiplier)
    xs, ys, owners, counts = [], [], [], []
    t0 = time.perf_counter()
    for pid in range(num_clients):
        images, labels = load_partition(s, pid, num_clients)
        x, y, _ = distill_partition(s, images, labels, data, seed=client_seed(s, pid),
                                    privacy=privacy)
        xs.append(x)
        ys.append(y)
        owners.append(torch.full((len(y),), pid))
        counts.append(torch.bincount(labels, minlength=data.num_classes))
        print(f"client {pid}: {len(y)} summary images ({time.perf_counter() - t0:.0f} s)", flush=True)
    return {"x": torch.cat(xs), "y": torch.cat(ys), "owner": torch.cat(owners), "counts": torch.stack(counts)}


def cached_summaries(cache: Path, s: TaskSettings, noise_multiplier: float | None = None) -> dict[str, torch.Tensor]:
    """:func:`summaries` of 10 clients, loaded from ``cache`` (``weights_only``) or made and saved there."""
    if cache.exists():
        return torch.load(cache, weights_only=True)
    blob = summaries(s, 10, noise_multiplier)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, cache)
    return blob


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of std ``sigma`` pixels (a kernel ``2 * floor(2 sigma) + 1`` wide, reflected borders)."""
    from torchvision.transforms.v2.functional import gaussian_blur

    k = 2 * int(2 * sigma) + 1
    return gaussian_blur(x, [k, k], [sigma, sigma])


def project(x: torch.Tensor, ref: torch.Tensor, k: int) -> torch.Tensor:
    """Each image of ``x`` projected onto the mean and the top ``k`` principal components of ``ref``."""
    flat, rflat = x.flatten(1), ref.flatten(1)
    mean = rflat.mean(0)
    _, _, v = torch.linalg.svd(rflat - mean, full_matrices=False)
    basis = v[:k]
    return (mean + (flat - mean) @ basis.T @ basis).view_as(x)


@contextlib.contextmanager
def _after_dsa(fn: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None) -> Iterator[None]:
    """While open, the server's DSA (``train_global``'s) applies ``fn(batch, generator)`` after its own
    augmentation; ``None`` leaves it alone."""
    import fedcl.federated.task as task

    stock = task.DSA

    class WrappedDSA(stock):
        def random(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            return fn(super().random(x, gen), gen)

    task.DSA = WrappedDSA if fn is not None else stock
    try:
        yield
    finally:
        task.DSA = stock


def _random_blur(x: torch.Tensor, gen: torch.Generator, top: float) -> torch.Tensor:
    sigma = top * float(torch.rand((), generator=gen))
    return blur(x, sigma) if sigma > 0.1 else x


def _relative_noise(x: torch.Tensor, gen: torch.Generator, factor: float) -> torch.Tensor:
    std = x.flatten(1).std(1).view(-1, *([1] * (x.dim() - 1)))
    return x + factor * std * torch.randn(x.shape, generator=gen)


def teacher_record(teachers: list[torch.nn.Module], data: ImageData) -> dict[str, object]:
    """The test accuracy of each of ``teachers`` and of their ensemble (mean softmax), for a JSON record."""
    ensemble = mean_softmax(teachers)
    with torch.no_grad():
        pred = torch.cat([ensemble(data.test_images[i:i + 1000]).argmax(1)
                          for i in range(0, len(data.test_images), 1000)])
    return {"teachers": [accuracy(m, data.test_images, data.test_labels) for m in teachers],
            "ensemble": float((pred == data.test_labels).double().mean())}


def server_run(s: TaskSettings, blob: dict[str, torch.Tensor], mode: str, offset: int) -> dict[str, object]:
    data = load_data(s.dataset, s.data_root)
    x, y, owner, counts = blob["x"], blob["y"], blob["owner"], blob["counts"]
    size = counts[owner, y].double()  # the owning client's class size, per summary image
    largest = torch.zeros(data.num_classes, dtype=torch.float64).scatter_reduce_(0, y, size, "amax", include_self=False)
    reps = torch.ones(len(y), dtype=torch.long)
    kd = 0
    if mode.startswith("kd"):  # kdK/MODE: K teachers trained with MODE, then a student on their mean softmax
        k, _, mode = mode[len("kd"):].partition("/")
        kd = int(k)
    mode, _, smooth = mode.partition("+ls")  # MODE+lsA: label smoothing A (soft targets)
    base, _, select = mode.partition("+sel")
    if base.startswith("blur"):  # a low-pass filter on every summary image (post-processing), then the rest
        sigma, _, base = base[len("blur"):].partition("/")
        x = blur(x, float(sigma))
    elif base.startswith("std"):  # every summary image standardised to mean 0 and std R (its own statistics)
        r, _, base = base[len("std"):].partition("/")
        x = standardize_images(x, float(r))
    elif base.startswith("pow"):  # image i scaled to std 5 (s_i / median s)^B: B=1 as gscale5, B=0 as std5
        b, _, base = base[len("pow"):].partition("/")
        std = x.flatten(1).std(1).clamp_min(1e-12)
        x = x * (5.0 * (std / std.median()) ** float(b) / std).view(-1, *([1] * (x.dim() - 1)))
    elif base.startswith("gscale"):  # all summary images scaled by one factor: their median std becomes R
        r, _, base = base[len("gscale"):].partition("/")
        x = x * (float(r) / x.flatten(1).std(1).median())
    elif base.startswith("pca"):  # project every image onto the top-k components of the large holders' images
        k, _, base = base[len("pca"):].partition("/")
        x = project(x, x[size >= 400], int(k))
    post = None  # applied to every server batch after DSA
    if base.startswith("rblur"):  # a random Gaussian blur per server batch (std uniform in [0, B])
        top, _, base = base[len("rblur"):].partition("/")
        post = functools.partial(_random_blur, top=float(top))
    elif base.startswith("noise") and "~" in base:  # noiseA~B: the app's server_noise=A, server_noise_decay=B/A
        first, _, second = base[len("noise"):].partition("~")
        if not float(first) > 0:
            raise SystemExit(f"server mode {mode!r}: the noise before the lr step must be > 0")
        s = dataclasses.replace(s, server_noise=float(first), server_noise_decay=float(second) / float(first))
        base = "plain"
    elif base.startswith("rnoise"):  # noise of std F times each image's own std (instead of noiseS)
        post = functools.partial(_relative_noise, factor=float(base[len("rnoise"):]))
        base = "plain"
    if select:
        reps = select_summaries(x, y, owner, float(select)).long()
    if base == "half":
        reps = reps * (size >= 0.5 * largest[y]).long()
    elif base == "rep":
        reps = reps * ((size / largest[y]) ** 2 * 3).round().clamp(min=1).long()
    elif base.startswith("noise"):
        s = dataclasses.replace(s, server_noise=float(base[len("noise"):]))
    elif base not in ("plain", ""):
        raise SystemExit(f"unknown server mode {mode!r}")
    xi, yi = x.repeat_interleave(reps, 0), y.repeat_interleave(reps, 0)
    if smooth:
        a = float(smooth)
        yi = torch.nn.functional.one_hot(yi, data.num_classes).float() * (1 - a) + a / data.num_classes
    t0 = time.perf_counter()
    extra: dict[str, object] = {}
    teacher = None
    if kd:  # the app's server_teachers=K, with the teachers kept here to measure them
        with _after_dsa(post):
            teachers = train_teachers(dataclasses.replace(s, server_teachers=kd), xi, yi, data,
                                      epochs=s.server_epochs, seed=s.seed + 1 + offset)
        teacher = mean_softmax(teachers)
        extra = teacher_record(teachers, data)
    model = make_model(s, data, seed=s.seed)
    with _after_dsa(post):
        acc = train_global(s, model, xi, yi, data, epochs=s.server_epochs, seed=s.seed + 1 + offset, teacher=teacher)
    per_class = class_accuracy(predict(model, data.test_images), data.test_labels, data.num_classes)
    label = (f"kd{kd}/" if kd else "") + mode + (f"+ls{smooth}" if smooth else "")
    return {"seed": s.seed, "server": label, "train_seed": s.seed + 1 + offset, "accuracy": acc,
            "class_accuracy": [round(a, 3) for a in per_class], "images": int(len(yi)),
            "seconds": round(time.perf_counter() - t0), **extra}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cache_args(p)
    p.add_argument("--set", nargs="*", default=[], help="TaskSettings overrides, snake_case key=value")
    p.add_argument("--server", nargs="*", default=["plain"])
    p.add_argument("--server-set", nargs="*", default=[],
                   help="TaskSettings overrides for the server's training only (e.g. width=32 when --set width=8)")
    p.add_argument("--init-scale", type=float, default=1.0)
    p.add_argument("--noise-multiplier", type=float, default=None,
                   help="the clients' noise multiplier instead of calibrating to epsilon (0: no noise, not private)")
    args = p.parse_args()
    torch.set_num_threads(1)
    s = settings(args.seed, args.root, args.set)
    if args.init_scale != 1.0:
        import fedcl.privacy.engines as engines

        setup = engines._setup

        def scaled(*a: object, **k: object) -> tuple:
            mech, syn, group, expected = setup(*a, **k)
            return mech, syn * args.init_scale, group, expected

        engines._setup = scaled
    blob = cached_summaries(cache_file(args.cache, args.tag, args.seed), s, args.noise_multiplier)
    server = dataclasses.replace(s, **{k: _value(k, t) for k, _, t in (i.partition("=") for i in args.server_set)})
    for spec in args.server:
        mode, _, offset = spec.partition("#")
        rec = {"tag": args.tag, "set": args.set, "init_scale": args.init_scale,
               **({"noise_multiplier": args.noise_multiplier} if args.noise_multiplier is not None else {}),
               **({"server_set": args.server_set} if args.server_set else {}),
               **server_run(server, blob, mode, int(offset or 0))}
        print(json.dumps(rec), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
