"""``fedcl federated [CONFIG.yaml] [key=value ...]``: compare strategies in one Flower simulation run folder.

The strategies run in one Flower run of fedcl's app (:mod:`fedcl.federated.simulation`: ``flwr
run`` against a simulation SuperLink of its own), each with the same partitions and model; a
centralised baseline trains the same model on all the data. The run folder holds
``config.yaml``, ``metrics.json``, ``results.md``, ``accuracy_vs_bytes.png`` and each strategy's
final global model (``model.safetensors``, or ``models/<strategy>.safetensors`` for several; see
:mod:`fedcl.models.saved`). The keys are
:class:`~fedcl.federated.config.FederatedConfig`'s (``fedcl federated --help``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from fedcl.config import load_config
from fedcl.federated.config import ClientResources, FederatedConfig, FederatedData, FederatedPrivacy, validate
from fedcl.federated.simulation import LocalSimulation, simulate

__all__ = ["ClientResources", "FederatedConfig", "FederatedData", "FederatedPrivacy", "LocalSimulation",
           "centralised", "main", "run_federated"]


def centralised(cfg: FederatedConfig) -> dict[str, Any]:
    """The same model trained on all the training data (the bar the summaries aim at): real images, so
    without ``server_noise``, which is meant for DP summaries, at the learning rate ``lr``."""
    from fedcl.federated.task import make_model, run_data, train_global

    s = replace(cfg, server_noise=0.0)
    data = run_data(s)
    t0 = time.perf_counter()
    model = make_model(s, data, seed=cfg.seed)
    acc = train_global(s, model, data.train_images, data.train_labels, data, epochs=cfg.central_epochs, seed=cfg.seed,
                       lr=cfg.lr)
    return {"final_accuracy": acc, "epochs": cfg.central_epochs, "train_images": int(len(data.train_labels)),
            "seconds": time.perf_counter() - t0}


def run_federated(cfg: FederatedConfig, client_app: str | None = None,
                  simulation: LocalSimulation | None = None) -> dict[str, Any]:
    """Run every configured strategy (and the centralised baseline); return metrics.json's content.

    Args:
        cfg: the settings.
        client_app: ``module:attribute`` of the simulated clients' ClientApp (default: fedcl's; see
            :meth:`LocalSimulation.run`).
        simulation: a running :class:`LocalSimulation` to run on (default: one for this call).

    Raises:
        FedclError: bad settings (before anything starts) or a failed run (e.g. a round below
            ``min_summaries``).
    """
    import torch

    torch.set_num_threads(cfg.threads)
    validate(cfg)
    t0 = time.perf_counter()
    results: dict[str, Any] = simulate(cfg, client_app, simulation)["strategies"]
    metrics: dict[str, Any] = {"dataset": cfg.dataset, "num_clients": cfg.num_clients, "partition": cfg.partition,
                               "alpha": cfg.alpha, "codec": cfg.codec, "ipc": cfg.ipc, "device": cfg.device,
                               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                               "client_resources": {"num_cpus": cfg.client_resources.num_cpus,
                                                    "num_gpus": cfg.client_resources.num_gpus},
                               "strategies": results}
    if cfg.centralised:
        metrics["centralised"] = centralised(cfg)
    metrics["seconds"] = time.perf_counter() - t0
    return metrics


def main(argv: list[str]) -> int:
    """Entry point of ``fedcl federated``."""
    from fedcl.federated.report import write_report
    from fedcl.runs import run_folder, save_config, write_json

    cfg = load_config(FederatedConfig, argv)
    validate(cfg)
    with run_folder(cfg.out, f"federated-{cfg.dataset}") as folder:  # a failed run leaves no folder
        # the ServerApp saves each strategy's final global model into the run folder
        metrics = run_federated(replace(cfg, model_dir=str(Path(folder).resolve())))
        save_config(folder, cfg)
        write_json(folder / "metrics.json", metrics)
        write_report(folder, metrics)
    for name, r in metrics["strategies"].items():
        print(f"{name:8s} accuracy {r['final_accuracy']:.4f}  uplink {r['uplink_bytes']:,} B  "
              f"dropped {r['dropped_summaries']}  refused {r['refused_summaries']}")
    if "centralised" in metrics:
        print(f"centralised accuracy {metrics['centralised']['final_accuracy']:.4f}")
    return 0
