"""MNIST-6k one-shot summaries, in process (no Ray): the reduced study for a CPU that cannot run the full one.

The same functions the ClientApp and ServerApp call (``fedcl.federated.task``), without
Flower: each of 10 clients (Dirichlet alpha 0.1) distills its partition with DM at ipc
10, the server trains a fresh ConvNet on the union, a centralised ConvNet trains on all
6,000 images. Uplink bytes are the float32 summaries' ``ArrayRecord.count_bytes``;
FedAvg's uplink after ``rounds`` rounds is ``rounds * clients`` model ``ArrayRecord``s
(what every FedAvg round sends up; its accuracy needs the full Flower run,
``experiments/federated_mnist.py``).

Usage: FEDCL_PROGRESS=0 nice -n 5 .venv/bin/python experiments/federated_mnist_oneshot.py [--iterations 50]
Writes experiments/results/federated_mnist_oneshot.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from federated_common import environment  # noqa: E402

from fedcl.federated.codec import encode_summary  # noqa: E402
from fedcl.federated.task import (  # noqa: E402
    TaskSettings,
    client_seed,
    distill_partition,
    load_data,
    load_partition,
    make_model,
    train_global,
)

OUT = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--server-epochs", type=int, default=300)
    ap.add_argument("--central-epochs", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=20, help="FedAvg rounds for the uplink-bytes ratio")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    s = TaskSettings(dataset="mnist", data_root=args.root, seed=args.seed, iterations=args.iterations)
    data = load_data(s.dataset, s.data_root)
    clients = 10
    t0 = time.perf_counter()
    xs, ys, up = [], [], 0
    for pid in range(clients):
        x, y = load_partition(s, pid, clients)
        sx, sy, _ = distill_partition(s, x, y, data, seed=client_seed(s, pid))
        up += encode_summary(sx, sy, s.codec).count_bytes()
        xs.append(sx)
        ys.append(sy)
        print(f"client {pid}: {len(y)} images -> {len(sy)} summary images ({time.perf_counter() - t0:.0f} s)", flush=True)
    distill_s = time.perf_counter() - t0
    x, y = torch.cat(xs), torch.cat(ys)
    t1 = time.perf_counter()
    oneshot = train_global(s, make_model(s, data, seed=s.seed), x, y, data, epochs=args.server_epochs, seed=s.seed + 1)
    server_s = time.perf_counter() - t1
    print(f"one-shot accuracy {oneshot:.4f}", flush=True)
    from flwr.app import ArrayRecord

    model_bytes = ArrayRecord(make_model(s, data).state_dict()).count_bytes()
    fedavg_up = args.rounds * clients * model_bytes
    t2 = time.perf_counter()
    central = train_global(s, make_model(s, data, seed=s.seed), data.train_images, data.train_labels, data,
                           epochs=args.central_epochs, seed=s.seed)
    central_s = time.perf_counter() - t2
    result = {"environment": environment(), "label": "reduced, in process (no Ray/Flower), one seed",
              "settings": {**vars(args), "clients": clients, "partition": "dirichlet", "alpha": s.alpha, "ipc": s.ipc,
                           "lr_img": s.lr_img, "batch_real": s.batch_real, "model": s.model},
              "oneshot_accuracy": oneshot, "summary_images": int(len(y)), "oneshot_uplink_bytes": up,
              "centralised_accuracy": central, "gap_points": 100 * (central - oneshot),
              "fedavg_model_bytes": model_bytes, "fedavg_uplink_bytes": fedavg_up, "uplink_ratio": up / fedavg_up,
              "seconds": {"distill": distill_s, "server": server_s, "centralised": central_s}}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "federated_mnist_oneshot.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
