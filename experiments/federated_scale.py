"""100 simulated clients on digits (one-shot summaries): does it fit a 2-core, 24 GB machine? Peak memory measured.

Usage: FEDCL_PROGRESS=0 nice -n 10 .venv/bin/python experiments/federated_scale.py [--clients 100] [--iterations 200]
Writes experiments/results/federated_scale.json and prints the peak RSS of the whole process tree (driver + Ray).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from federated_common import PeakMemory, environment  # noqa: E402

from fedcl.federated.command import FederatedConfig, run_federated  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--ipc", type=int, default=5)
    ap.add_argument("--width", type=int, default=0)
    args = ap.parse_args()
    cfg = FederatedConfig(dataset="digits", num_clients=args.clients, partition="dirichlet", alpha=0.1, ipc=args.ipc,
                          iterations=args.iterations, width=args.width, strategies=["oneshot"], centralised=False,
                          threads=1)
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        r = run_federated(cfg)["strategies"]["oneshot"]
    result = {"environment": environment(), "clients": args.clients, "iterations": args.iterations, "ipc": args.ipc,
              "width": args.width, "final_accuracy": r["final_accuracy"], "summary_images": r["summary_images"],
              "uplink_bytes": r["uplink_bytes"], "dropped_summaries": r["dropped_summaries"],
              "peak_rss_bytes": mem.peak, "peak_rss_gib": mem.peak / 2**30, "seconds": time.perf_counter() - t0}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "federated_scale.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
