"""MNIST-6k (../shared/data): 10 clients, Dirichlet alpha 0.1, ConvNet; oneshot DM ipc 10 vs feddm vs fedavg vs centralised.

Optionally a DP one-shot run at epsilon 1 per client (delta 1e-5).

Usage (background, niced):
    FEDCL_PROGRESS=0 nice -n 10 .venv/bin/python experiments/federated_mnist.py --seeds 0 [--dp] [--root ../shared/data]
Writes experiments/results/federated_mnist.{json,md} and federated_mnist_accuracy_vs_bytes.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from federated_common import environment  # noqa: E402

from fedcl.federated.command import (  # noqa: E402
    ClientResources,
    FederatedConfig,
    FederatedData,
    FederatedPrivacy,
    centralised,
    run_federated,
)
from fedcl.federated.report import plot_accuracy_vs_bytes, results_table  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--root", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--client-cpus", type=int, default=1, help="Ray CPUs per client (2 on 2 cores: one at a time)")
    ap.add_argument("--feddm-rounds", type=int, default=3)
    ap.add_argument("--strategies", nargs="*", default=["oneshot", "fedavg", "feddm"],
                    help="non-DP strategies (none: only the --dp run)")
    ap.add_argument("--dp", action="store_true", help="also a DP one-shot run at epsilon 1 per client")
    ap.add_argument("--dp-iterations", type=int, default=0, help="DP run: dm iterations (0: --iterations)")
    ap.add_argument("--dp-batch-real", type=int, default=0,
                    help="DP run: real images per class per step (0: FederatedConfig's batch_real)")
    ap.add_argument("--width", type=int, default=0, help="ConvNet width (0: 128, the model's default)")
    ap.add_argument("--server-epochs", type=int, default=300,
                    help="epochs the server trains on the union of summaries (DM's reference evaluation: 1000)")
    ap.add_argument("--codec", default="float32", help="summary codec: float32, float16, uint8")
    ap.add_argument("--no-centralised", dest="centralised", action="store_false",
                    help="skip the centralised reference (another part of the study has it)")
    ap.add_argument("--tag", default="federated_mnist", help="output name: one part of a study per tag")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    runs, dp_runs = [], []
    for seed in args.seeds:
        cfg = FederatedConfig(dataset="mnist", data=FederatedData(root=args.root), num_clients=10, partition="dirichlet",
                              alpha=0.1, ipc=10, iterations=args.iterations, seed=seed, threads=args.threads,
                              strategies=list(args.strategies), rounds=20, feddm_rounds=args.feddm_rounds,
                              server_epochs=args.server_epochs, central_epochs=30, centralised=False,
                              codec=args.codec, width=args.width,
                              client_resources=ClientResources(num_cpus=args.client_cpus, num_gpus=0.0))
        # one strategy at a time, written after each, so a long run keeps what it finished
        run: dict = {"strategies": {}}
        runs.append(run)
        for name in [*args.strategies[:1], *(["centralised"] if args.centralised else []), *args.strategies[1:]]:
            if name == "centralised":
                run["centralised"] = centralised(cfg)
            else:
                one = run_federated(replace(cfg, strategies=[name]))
                key = name if args.codec == "float32" or name == "fedavg" else f"{name}[{args.codec}]"
                run["strategies"][key] = one["strategies"][name]
                run.update({k: v for k, v in one.items() if k not in ("strategies", "seconds")})
            _write(args, runs, dp_runs)
        if args.dp:
            dp = replace(cfg, strategies=["oneshot"], privacy=FederatedPrivacy(epsilon=1.0, delta=1e-5),
                         iterations=args.dp_iterations or cfg.iterations,
                         batch_real=args.dp_batch_real or cfg.batch_real)
            dp_runs.append(run_federated(dp)["strategies"]["oneshot"])
            _write(args, runs, dp_runs)


def _write(args, runs, dp_runs) -> None:
    report = {"environment": environment(), "seeds": args.seeds[:len(runs)], "iterations": args.iterations,
              "width": args.width or 128, "server_epochs": args.server_epochs,
              "dp_iterations": args.dp_iterations or args.iterations,
              "dp_batch_real": args.dp_batch_real or FederatedConfig().batch_real,
              "feddm_rounds": args.feddm_rounds, "codec": args.codec, "runs": runs, "dp_oneshot_eps1": dp_runs}
    (OUT / f"{args.tag}.json").write_text(json.dumps(report, indent=2, default=str))
    if not runs[0]["strategies"]:  # a DP-only study
        lines = [f"# Federated MNIST-6k, DP one-shot at epsilon 1 per client ({args.tag})", "",
                 f"Environment: {report['environment']}", ""]
        for seed, r in zip(args.seeds, dp_runs):
            lines.append(f"- seed {seed}: accuracy {r['final_accuracy']:.4f}, uplink {r['uplink_bytes']:,} bytes, "
                         f"dropped summaries {r.get('dropped_summaries')}")
        (OUT / f"{args.tag}.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    plot_accuracy_vs_bytes(runs[0], OUT / f"{args.tag}_accuracy_vs_bytes.png")

    def ms(values: list[float]) -> str:
        return f"{statistics.fmean(values):.4f} ± {statistics.pstdev(values) if len(values) > 1 else 0.0:.4f}"

    lines = ["# Federated MNIST-6k (measured here)", "", f"Environment: {report['environment']}", "",
             f"10 clients, Dirichlet alpha 0.1, ConvNet, DM ipc 10 per client ({args.iterations} iterations), "
             f"seeds {report['seeds']}.", "", "## Seed " + str(args.seeds[0]), "", results_table(runs[0]), "",
             "## Over seeds", "", "| strategy | accuracy (mean ± std) | uplink bytes |", "|---|---|---|"]
    for name in runs[0]["strategies"]:
        done = [r for r in runs if name in r["strategies"]]
        lines.append(f"| {name} | {ms([r['strategies'][name]['final_accuracy'] for r in done])} | "
                     f"{runs[0]['strategies'][name]['uplink_bytes']:,} |")
    central = [r["centralised"]["final_accuracy"] for r in runs if "centralised" in r]
    if central:
        lines.append(f"| centralised | {ms(central)} | - |")
    if dp_runs:
        lines += ["", f"DP one-shot at epsilon 1 per client: {ms([r['final_accuracy'] for r in dp_runs])}"]
    (OUT / f"{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
