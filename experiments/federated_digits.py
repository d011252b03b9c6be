"""Digits (embedded): 10 clients, Dirichlet alpha 0.1: oneshot vs feddm vs fedavg vs centralised, codecs, 100 clients.

Usage: nice -n 10 .venv/bin/python experiments/federated_digits.py [--skip-scale] [--seed 0]
Writes experiments/results/federated_digits.{json,md} and federated_digits_accuracy_vs_bytes.png.
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
from fedcl.federated.report import plot_accuracy_vs_bytes, results_table  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--skip-scale", action="store_true")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    base = dict(dataset="digits", num_clients=10, partition="dirichlet", alpha=0.1, ipc=10, seed=args.seed,
                iterations=args.iterations, threads=1, central_epochs=50)
    report: dict = {"environment": environment(), "settings": base}
    t0 = time.perf_counter()
    main_run = run_federated(FederatedConfig(**base, strategies=["oneshot", "feddm", "fedavg"], rounds=20,
                                             feddm_rounds=3))
    report["comparison"] = main_run
    report["comparison_seconds"] = time.perf_counter() - t0
    codecs = {}
    for codec in ("float16", "uint8"):
        r = run_federated(FederatedConfig(**{**base, "centralised": False}, strategies=["oneshot"], codec=codec))
        codecs[codec] = r["strategies"]["oneshot"]
    report["codecs"] = {"float32": main_run["strategies"]["oneshot"], **codecs}
    if not args.skip_scale:
        with PeakMemory() as mem:
            t1 = time.perf_counter()
            r = run_federated(FederatedConfig(**{**base, "num_clients": 100, "centralised": False, "ipc": 5},
                                              strategies=["oneshot"]))
        report["scale_100"] = {"final_accuracy": r["strategies"]["oneshot"]["final_accuracy"],
                               "dropped_summaries": r["strategies"]["oneshot"]["dropped_summaries"],
                               "uplink_bytes": r["strategies"]["oneshot"]["uplink_bytes"],
                               "peak_rss_bytes": mem.peak, "seconds": time.perf_counter() - t1}
    (OUT / "federated_digits.json").write_text(json.dumps(report, indent=2, default=str))
    plot_accuracy_vs_bytes(main_run, OUT / "federated_digits_accuracy_vs_bytes.png")
    lines = [f"# Federated digits (measured here, seed {args.seed})", "",
             f"Environment: {report['environment']}", "",
             f"10 clients, Dirichlet alpha 0.1, DM ipc 10 per client ({args.iterations} iterations), "
             f"comparison wall time {report['comparison_seconds']:.0f} s (shared CPU).", "",
             results_table(main_run), "", "## Codecs (one-shot)", "", "| codec | uplink bytes | accuracy |", "|---|---|---|"]
    for name, r in report["codecs"].items():
        lines.append(f"| {name} | {r['uplink_bytes']:,} | {r['final_accuracy']:.4f} |")
    if "scale_100" in report:
        s = report["scale_100"]
        lines += ["", f"## 100 clients (one-shot, ipc 5): accuracy {s['final_accuracy']:.4f}, "
                      f"peak RSS of the process tree {s['peak_rss_bytes'] / 2**30:.2f} GiB, {s['seconds']:.0f} s"]
    (OUT / "federated_digits.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
