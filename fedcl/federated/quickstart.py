"""The federated step of ``fedcl quickstart``: a short Flower simulation on digits."""

from __future__ import annotations

from pathlib import Path

__all__ = ["federated_step"]


def federated_step(out: Path, device: str) -> str:
    """5 digits clients (Dirichlet 0.1): one-shot DM summaries vs 5 rounds of FedAvg, with byte counts."""
    from fedcl.federated.command import FederatedConfig, run_federated
    from fedcl.federated.report import results_table, write_report
    from fedcl.runs import save_config, write_json

    cfg = FederatedConfig(dataset="digits", num_clients=5, strategies=["oneshot", "fedavg"], rounds=5, ipc=10,
                          iterations=100, server_epochs=200, central_epochs=30, width=64,
                          device="cpu" if device == "auto" else device)
    metrics = run_federated(cfg)
    save_config(out, cfg)
    write_json(out / "metrics.json", metrics)
    write_report(out, metrics)
    return "Federated digits (5 Flower clients, Dirichlet 0.1):\n" + results_table(metrics)
