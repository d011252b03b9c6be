"""DP one-shot on MNIST-6k with *pooled* releases: the server combines the clients' noisy class means.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/federated_dp_pooled.py --seed 3 [--server-noise 2 0]

A prototype of another one-shot protocol, run in process (no Flower), to measure whether it is
worth building. In ``configs/federated/dp_oneshot_mnist.yaml`` every client runs DP dm on its
own and sends images; a class split among several small holders then arrives as several noisy
image sets, each made from one holder's noisy class means. Here the clients release the same
statistics, but for *shared* public randomness, so that the server can pool them before any
image is made:

- every step ``t`` uses a matching network, a DSA draw and a centre that all parties derive
  from a public seed (the centre is the mean embedding of the server's initial synthetic set,
  which is Gaussian noise drawn from that seed: no data);
- client ``k`` releases, per class it summarises (at least ``dp_min_class_images`` images, as
  in the config), the noisy clipped sum of its Poisson-sampled normalised embeddings: the
  client's DP dm mechanism exactly (same sample rate, noise multiplier and accounting, so the
  same epsilon), with its expected batch ``q_k N_kc`` (class sizes are public to the
  mechanism, as in the config's clients);
- the server combines the holders of a class by inverse variance (weights ``e_kc^2 / s_k^2``,
  ``e_kc = q_k N_kc``, ``s_k`` the client's noise std) and runs the dm image updates (with
  ``privacy.replay`` passes) against the pooled targets, then trains the global model on the
  ``ipc`` images per class it made, as the config's server does.

Everything the server does is post-processing of the clients' releases. One JSON line per
server run goes to ``--out``.

Measured (eleventh session, experiments/results/federated.md): 0.881 +- 0.018 over seeds 0-8,
1.4 points *below* the config. Each client still adds its own noise, so pooling holders of
``N_1, N_2, ...`` images gives the signal-to-noise ratio of one holder of ``sqrt(sum N_k^2)``
images, not of ``sum N_k``; and the centre here is fixed, where the config's clients re-centre on
their evolving images.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from fedcl.distill import create_distiller
from fedcl.distill.augment import DSA, default_strategy
from fedcl.distill.dm import class_means
from fedcl.federated.task import TaskSettings, client_seed, load_data, load_partition, make_model, train_global
from fedcl.models import create_model
from fedcl.privacy.engines import plan_release
from fedcl.privacy.mechanism import GaussianMechanism, normalize_rows, private_network
from fedcl.train import class_accuracy, predict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from federated_dp_ablation import settings  # noqa: E402  (the ablation's settings: the config's clients)


def pooled_release(s: TaskSettings, num_clients: int, public_seed: int) -> tuple[list, torch.Tensor, list[float]]:
    """The clients' releases for the shared steps, pooled per class by the server.

    Returns ``(steps, initial images, noise multipliers)``: one ``(network, DSA draw, centre, target,
    classes)`` per step, the server's public initial images, and each releasing client's noise multiplier.
    """
    data = load_data(s.dataset, s.data_root)
    k_all = data.num_classes
    privacy = s.privacy_config()
    gen = torch.Generator().manual_seed(public_seed)
    syn0 = torch.randn((k_all * s.ipc, *data.image_shape), generator=gen)
    syn_labels = torch.arange(k_all).repeat_interleave(s.ipc)
    aug = DSA(default_strategy(data.name))
    engine = create_distiller("dm", iterations=s.iterations, batch_real=s.batch_real, progress=False)
    clients = []
    for pid in range(num_clients):
        images, labels = load_partition(s, pid, num_clients)
        counts = torch.bincount(labels, minlength=k_all)
        released = [c for c in range(k_all) if int(counts[c]) >= s.dp_min_class_images]
        if not released:
            continue
        # the client's own DP dm release plan (sample rate, noise multiplier), as distill_partition makes it
        params = plan_release(engine, counts[released].tolist(), s.ipc, privacy)
        keep = torch.isin(labels, torch.tensor(released))
        expected = torch.zeros(k_all, dtype=torch.float64)  # 0 for the classes the client does not release
        expected[released] = params.sample_rate * counts[released].double()
        mech = GaussianMechanism(params, seed=client_seed(s, pid))
        clients.append((images[keep], labels[keep], expected, mech))
    steps = []
    for t in range(s.iterations):
        torch.manual_seed(public_seed * 1_000_003 + t)
        net = private_network(create_model(s.model, data.image_shape, k_all, **s.model_kwargs), warn=False)
        net.train()
        for p in net.parameters():
            p.requires_grad_(False)
        draw = aug.sample(k_all, gen)
        with torch.no_grad():
            ref = net.embed(aug(syn0, draw, syn_labels)).mean(0)
            num = torch.zeros(k_all, ref.numel(), dtype=torch.float64)
            den = torch.zeros(k_all, dtype=torch.float64)
            for x, y, expected, mech in clients:  # each client, on its own data
                idx = mech.sample(len(y))
                emb = net.embed(aug(x[idx], draw, y[idx])) - ref if len(idx) else x.new_zeros(0, ref.numel())
                sums = mech.noisy_class_sums(emb, y[idx], k_all, normalize=True).double()
                # the server: inverse-variance pooling of the released sums (weight 0 where nothing is released)
                num += (expected / mech.noise_std**2)[:, None] * sums
                den += expected**2 / mech.noise_std**2
        classes = [c for c in range(k_all) if den[c] > 0]
        target = (num[classes] / den[classes, None]).float()
        steps.append((net, draw, ref, target, classes))
    return steps, syn0, [round(c[3].params.noise_multiplier, 3) for c in clients]


def synthesise(s: TaskSettings, steps: list, syn0: torch.Tensor, public_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The server's dm image updates against the pooled targets (``1 + replay`` passes)."""
    data = load_data(s.dataset, s.data_root)
    k_all = data.num_classes
    syn_labels = torch.arange(k_all).repeat_interleave(s.ipc)
    classes = steps[0][4]
    keep = torch.isin(syn_labels, torch.tensor(classes))
    param = syn0[keep].clone().requires_grad_(True)
    labels = syn_labels[keep]
    opt = torch.optim.SGD([param], lr=s.dp_lr_img, momentum=0.5)
    aug = DSA(default_strategy(data.name))
    gen = torch.Generator().manual_seed(public_seed + 1)
    c_max = s.max_grad_norm
    order = list(range(len(steps)))
    for p in range(1 + s.dp_replay):
        if p:
            order = torch.randperm(len(steps), generator=gen).tolist()
        for i in order:
            net, draw, ref, target, cls = steps[i]
            emb = normalize_rows(net.embed(aug(param, draw, labels)) - ref, c_max)
            loss = ((class_means(emb, labels, cls) - target) ** 2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return param.detach(), labels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", default="../shared/data")
    p.add_argument("--set", nargs="*", default=[], help="TaskSettings overrides, snake_case key=value")
    p.add_argument("--server-noise", type=float, nargs="*", default=[2.0])
    p.add_argument("--tag", default="pooled")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "federated_dp_ablation.jsonl"))
    args = p.parse_args()
    torch.set_num_threads(1)
    s = settings(args.seed, args.root, args.set, server_epochs=2000)  # the config's clients and server
    public_seed = 7919 * (s.seed + 1)
    t0 = time.perf_counter()
    steps, syn0, multipliers = pooled_release(s, 10, public_seed)
    t1 = time.perf_counter()
    x, y = synthesise(s, steps, syn0, public_seed)
    t2 = time.perf_counter()
    print(f"release {t1 - t0:.0f} s, synthesis {t2 - t1:.0f} s, noise multipliers {multipliers}",
          flush=True)
    data = load_data(s.dataset, s.data_root)
    for noise in args.server_noise:
        server = dataclasses.replace(s, server_noise=noise)
        t3 = time.perf_counter()
        model = make_model(server, data, seed=s.seed)
        acc = train_global(server, model, x, y, data, epochs=s.server_epochs, seed=s.seed + 1)
        per_class = class_accuracy(predict(model, data.test_images), data.test_labels, data.num_classes)
        rec = {"tag": args.tag, "set": args.set, "seed": s.seed, "server": f"noise{noise}", "accuracy": acc,
               "class_accuracy": [round(a, 3) for a in per_class], "images": int(len(y)),
               "seconds": {"release": round(t1 - t0), "synthesis": round(t2 - t1),
                           "server": round(time.perf_counter() - t3)}}
        print(json.dumps(rec), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
