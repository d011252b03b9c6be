"""A federated config's one-shot DP run on MNIST-6k, in process (no Ray), one seed at a time.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/federated_dp_ablation.py --root ../shared/data --seed S \
        [--config configs/federated/dp_oneshot_mnist.yaml] [--set KEY=V ...] [--server-set KEY=V ...] [--tag NAME]

The clients of the config (``configs/federated/dp_oneshot_mnist.yaml`` unless ``--config``; ``--set``
takes the same ``key=value`` overrides as ``fedcl federated``) distil their partitions one after the
other in this process, with the functions and seeds of the ClientApp; the union of their summaries is
cached under ``--cache`` (per ``--tag`` and seed), and the server trains on it as the ServerApp does
(``train_global``). It gives the Flower run's figure to the digit (seeds 0, 1 and 19 of
``experiments/results/federated.md``) without Ray, so several seeds fit on a small CPU.
``--server-set`` changes the server's settings only (snake_case ``FederatedConfig`` keys, e.g.
``server_noise_decay=0.5``) and reuses the cached summaries. ``--offsets`` trains the server again with
other seeds for its training randomness. ``--noise-multiplier 0`` runs the clients' DP engine without
its noise (not private: it measures what the noise costs).

One JSON line per server run goes to ``--out`` (test accuracy, accuracy per class, images, seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from fedcl.config import load_config
from fedcl.federated.config import FederatedConfig, from_run_config, to_run_config
from fedcl.federated.task import (
    client_seed,
    distill_partition,
    load_data,
    load_partition,
    make_model,
    train_global,
)
from fedcl.train import class_accuracy, predict

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "federated" / "dp_oneshot_mnist.yaml"


def settings(config: str, seed: int, root: str, overrides: list[str]) -> tuple[FederatedConfig, int]:
    """The config's settings (as its Flower run gets them) for ``seed`` and ``root``, and its clients."""
    cfg = load_config(FederatedConfig, path=config, overrides=[*overrides, f"seed={seed}", f"data.root={root}"])
    return from_run_config(to_run_config(cfg)), cfg.num_clients


def with_overrides(s: FederatedConfig, overrides: list[str]) -> FederatedConfig:
    """``s`` with snake_case ``key=value`` overrides, validated as a run config is."""
    extra = {k.replace("_", "-"): v for k, _, v in (item.partition("=") for item in overrides)}
    return from_run_config({**to_run_config(s), **extra})


def summaries(s: FederatedConfig, num_clients: int, noise_multiplier: float | None = None) -> dict[str, torch.Tensor]:
    """Every client's summary, as the ClientApp makes it (seeds included), and its class counts."""
    data = load_data(s.dataset, s.data.root)
    privacy = s.privacy.release()
    if noise_multiplier is not None:
        privacy = dataclasses.replace(privacy, epsilon=None, noise_multiplier=noise_multiplier)
    xs, ys, owners, counts = [], [], [], []
    t0 = time.perf_counter()
    for pid in range(num_clients):
        images, labels = load_partition(s, pid, num_clients)
        x, y, _ = distill_partition(s, images, labels, data, seed=client_seed(s, pid), privacy=privacy)
        xs.append(x)
        ys.append(y)
        owners.append(torch.full((len(y),), pid))
        counts.append(torch.bincount(labels, minlength=data.num_classes))
        print(f"client {pid}: {len(y)} summary images ({time.perf_counter() - t0:.0f} s)", flush=True)
    return {"x": torch.cat(xs), "y": torch.cat(ys), "owner": torch.cat(owners), "counts": torch.stack(counts)}


def cached_summaries(cache: Path, s: FederatedConfig, num_clients: int,
                     noise_multiplier: float | None = None) -> dict[str, torch.Tensor]:
    """:func:`summaries`, loaded from ``cache`` (``weights_only``) or made and saved there."""
    if cache.exists():
        return torch.load(cache, weights_only=True)
    blob = summaries(s, num_clients, noise_multiplier)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, cache)
    return blob


def server_run(s: FederatedConfig, blob: dict[str, torch.Tensor], offset: int) -> dict[str, object]:
    """The ServerApp's training on the union of summaries (training seed ``s.seed + 1 + offset``)."""
    data = load_data(s.dataset, s.data.root)
    x, y = blob["x"], blob["y"]
    t0 = time.perf_counter()
    model = make_model(s, data, seed=s.seed)
    acc = train_global(s, model, x, y, data, epochs=s.server_epochs, seed=s.seed + 1 + offset)
    per_class = class_accuracy(predict(model, data.test_images), data.test_labels, data.num_classes)
    return {"seed": s.seed, "train_seed": s.seed + 1 + offset, "accuracy": acc,
            "class_accuracy": [round(a, 3) for a in per_class], "images": int(len(y)),
            "seconds": round(time.perf_counter() - t0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", default="../shared/data")
    p.add_argument("--tag", default="config", help="names the cached summaries (one tag per client setting)")
    p.add_argument("--cache", default="/tmp/fedcl_dp_ablation")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "federated_dp_ablation.jsonl"))
    p.add_argument("--set", nargs="*", default=[], help="config overrides, key=value as for `fedcl federated`")
    p.add_argument("--server-set", nargs="*", default=[],
                   help="FederatedConfig overrides for the server's training only, snake_case key=value")
    p.add_argument("--offsets", type=int, nargs="*", default=[0], help="server training seeds: seed + 1 + offset")
    p.add_argument("--noise-multiplier", type=float, default=None,
                   help="the clients' noise multiplier instead of calibrating to epsilon (0: no noise, not private)")
    args = p.parse_args()
    torch.set_num_threads(1)
    s, num_clients = settings(args.config, args.seed, args.root, args.set)
    blob = cached_summaries(Path(args.cache) / f"{args.tag}_seed{args.seed}.pt", s, num_clients,
                            args.noise_multiplier)
    server = with_overrides(s, args.server_set)
    for offset in args.offsets:
        rec = {"tag": args.tag, "config": Path(args.config).name, "set": args.set, "server_set": args.server_set,
               **({"noise_multiplier": args.noise_multiplier} if args.noise_multiplier is not None else {}),
               **server_run(server, blob, offset)}
        print(json.dumps(rec), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
