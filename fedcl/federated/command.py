"""``fedcl federated [CONFIG.yaml] [key=value ...]``: compare strategies in one Flower simulation run folder.

Each strategy runs as its own ``flwr.simulation.run_simulation`` (Ray backend) with the
same partitions and model; a centralised baseline trains the same model on all the data.
The run folder holds ``config.yaml``, ``metrics.json``, ``results.md``,
``accuracy_vs_bytes.png`` and each strategy's final global model (``model.safetensors``,
or ``models/<strategy>.safetensors`` for several; see :mod:`fedcl.models.saved`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedcl.config import DataConfig, load_config
from fedcl.errors import ConfigError
from fedcl.privacy.config import PrivacyConfig

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp

__all__ = ["ClientResources", "FederatedConfig", "main", "run_federated"]


@dataclass
class ClientResources:
    """Ray resources per simulated client: fractional values let several clients share a CPU or GPU."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass
class FederatedConfig:
    """``fedcl federated``: strategies compared on one federated split.

    ``rounds`` applies to ``fedavg``; ``feddm_rounds`` to ``feddm``; ``oneshot`` is one round.
    ``privacy.epsilon`` makes each client's summary DP: each summary is one release at that
    epsilon, so a client spends it once in ``oneshot`` and composes ``feddm_rounds`` of them in
    ``feddm`` (its ledger's total is in metrics.json, ``privacy_per_client``).
    ``privacy.budget`` caps a client's total: a client whose next summary would pass it refuses
    that summary (``refused_summaries``) and the run goes on with the others. Each strategy is
    its own run with its own ledgers. The rest of the ``privacy`` block (clipping bound,
    accountant, the ``dm`` options) goes to every client as it is.
    ``round_timeout`` (seconds) bounds a round: a summary round is a whole distillation per
    client, so it is generous; a client still busy at the timeout counts as a dropped summary.
    Client distillation (``method``, ``ipc``, ``iterations``, ``batch_real``, ``lr_img``, and
    under DP ``dp_lr_img`` and ``dp_min_class_images``) and the server's training
    (``server_epochs``, ``server_noise``, ``server_noise_decay``, ``server_standardize``) are
    described in :class:`fedcl.federated.task.TaskSettings`.
    """

    dataset: str = "digits"
    num_clients: int = 10
    partition: str = "dirichlet"
    alpha: float = 0.1
    classes_per_client: int = 2
    strategies: list[str] = field(default_factory=lambda: ["oneshot", "feddm", "fedavg"])
    rounds: int = 20
    feddm_rounds: int = 3
    method: str = "dm"
    ipc: int = 10
    iterations: int = 200
    batch_real: int = 256
    lr_img: float = 1.0
    dp_lr_img: float = 100.0
    dp_min_class_images: int = 100
    codec: str = "float32"
    model: str = "convnet"
    width: int = 0
    server_epochs: int = 300
    server_noise: float = 0.0
    server_noise_decay: float = 1.0
    server_standardize: bool = False
    local_epochs: int = 1
    lr: float = 0.01
    centralised: bool = True
    central_epochs: int = 50
    min_summaries: int = 1
    round_timeout: float = 3600.0
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    out: str | None = None
    client_resources: ClientResources = field(default_factory=ClientResources)
    data: DataConfig = field(default_factory=DataConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)


def _validate(cfg: FederatedConfig) -> None:
    from fedcl.data import load_dataset
    from fedcl.data.partition import PARTITIONERS
    from fedcl.distill import list_distillers
    from fedcl.federated.codec import CODECS
    from fedcl.federated.server_app import STRATEGIES
    from fedcl.privacy.accounting import validate_privacy
    from fedcl.privacy.ledger import LEDGER_ACCOUNTANTS

    for name in cfg.strategies:
        if name not in STRATEGIES:
            raise ConfigError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES.names())}")
    if cfg.partition not in PARTITIONERS:
        raise ConfigError(f"unknown partition {cfg.partition!r}; valid: {', '.join(PARTITIONERS.names())}")
    if cfg.codec not in CODECS:
        raise ConfigError(f"unknown codec {cfg.codec!r}; valid: {', '.join(CODECS.names())}")
    if cfg.method not in list_distillers():
        raise ConfigError(f"unknown method {cfg.method!r}; valid: {', '.join(list_distillers())}")
    if not cfg.round_timeout > 0:
        raise ConfigError(f"round_timeout must be > 0 seconds, got {cfg.round_timeout}")
    for key in ("num_clients", "rounds", "feddm_rounds", "ipc", "iterations", "batch_real", "min_summaries",
                "threads"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be at least 1, got {getattr(cfg, key)}")
    if cfg.privacy.noise_multiplier is not None:
        raise ConfigError("federated DP is set by privacy.epsilon (per client); privacy.noise_multiplier is not supported")
    if cfg.privacy.sample_rate is not None:
        raise ConfigError("federated DP samples at batch_real / class size on each client; set batch_real, "
                          "not privacy.sample_rate")
    if cfg.privacy.epsilon is not None and not cfg.privacy.epsilon > 0:
        raise ConfigError(f"privacy.epsilon must be > 0, got {cfg.privacy.epsilon}")
    _validate_budget(cfg.privacy.epsilon, cfg.privacy.budget)
    if cfg.privacy.epsilon is not None:  # the rest of the block, before any client starts (PrivacyError)
        validate_privacy(cfg.privacy)
    if cfg.privacy.epsilon is not None and cfg.privacy.accountant not in LEDGER_ACCOUNTANTS:
        raise ConfigError(f"privacy.accountant={cfg.privacy.accountant!r}: a client's ledger composes its releases "
                          f"over rounds, which needs {' or '.join(map(repr, LEDGER_ACCOUNTANTS))} (gdp cannot compose "
                          "them)")
    if cfg.privacy.epsilon is not None and "fedavg" in cfg.strategies:
        raise ConfigError("privacy.epsilon applies to summaries; drop 'fedavg' from strategies for a DP run")
    if not cfg.server_noise >= 0:
        raise ConfigError(f"server_noise must be >= 0 (a standard deviation), got {cfg.server_noise}")
    if not cfg.server_noise_decay >= 0:
        raise ConfigError(f"server_noise_decay must be >= 0 (a factor on server_noise; 1: constant), "
                          f"got {cfg.server_noise_decay}")
    if cfg.client_resources.num_cpus <= 0:
        raise ConfigError("client_resources.num_cpus must be > 0")
    if cfg.client_resources.num_gpus < 0:
        raise ConfigError(f"client_resources.num_gpus must be >= 0, got {cfg.client_resources.num_gpus}")
    if cfg.device.startswith("cuda") and cfg.client_resources.num_gpus == 0:
        raise ConfigError(f"device={cfg.device} needs client_resources.num_gpus > 0 (e.g. 0.2 lets five clients "
                          "share a GPU): Ray hides the GPUs from a client that reserves none")
    if cfg.client_resources.num_gpus > 0:
        import torch

        if not torch.cuda.is_available():  # Ray would wait for a GPU that never comes
            raise ConfigError(f"client_resources.num_gpus={cfg.client_resources.num_gpus} asks for a GPU per client, "
                              "but CUDA is not available here; set client_resources.num_gpus=0")
    load_dataset(cfg.dataset, cfg.data.root)  # DataError now, not inside a Ray actor


def _validate_budget(epsilon: float | None, budget: float | None) -> None:
    """``privacy.budget``: a cap on a client's total over its releases, so positive, at least one
    release's ``privacy.epsilon``, and only with DP."""
    if budget is None:
        return
    if epsilon is None:
        raise ConfigError(f"privacy.budget={budget} caps the epsilon of DP releases; set privacy.epsilon too")
    if not (budget > 0 and budget >= epsilon) or math.isinf(budget):
        raise ConfigError(f"privacy.budget must be > 0 and >= privacy.epsilon ({epsilon:g}, one release), "
                          f"got {budget}")


def run_config(cfg: FederatedConfig, strategy: str) -> dict[str, Any]:
    """The kebab-case run config the ServerApp of ``strategy`` gets (and sends on to clients)."""
    return {
        "strategy": strategy, "num-rounds": cfg.feddm_rounds if strategy == "feddm" else cfg.rounds,
        "min-nodes": cfg.num_clients, "min-summaries": cfg.min_summaries,
        "round-timeout": float(cfg.round_timeout), "dataset": cfg.dataset,
        "data-root": cfg.data.root or "", "partition": cfg.partition, "alpha": float(cfg.alpha),
        "classes-per-client": cfg.classes_per_client, "seed": cfg.seed, "method": cfg.method, "ipc": cfg.ipc,
        "iterations": cfg.iterations, "batch-real": cfg.batch_real, "lr-img": float(cfg.lr_img),
        "dp-lr-img": float(cfg.dp_lr_img), "dp-min-class-images": cfg.dp_min_class_images, "codec": cfg.codec,
        "model": cfg.model, "width": cfg.width, "server-epochs": cfg.server_epochs,
        "server-noise": float(cfg.server_noise), "server-noise-decay": float(cfg.server_noise_decay),
        "server-standardize": bool(cfg.server_standardize), "local-epochs": cfg.local_epochs, "lr": float(cfg.lr),
        "device": cfg.device, "epsilon": float(cfg.privacy.epsilon or 0.0), "delta": float(cfg.privacy.delta),
        "budget": float(cfg.privacy.budget or 0.0), "max-grad-norm": float(cfg.privacy.max_grad_norm),
        "accountant": cfg.privacy.accountant, "dp-normalize": bool(cfg.privacy.normalize),
        "dp-center": bool(cfg.privacy.center), "dp-replay": int(cfg.privacy.replay),
        "secure-mode": bool(cfg.privacy.secure_mode), "client-threads": cfg.threads, "server-threads": cfg.threads,
    }


def simulate(cfg: FederatedConfig, strategy: str, client_app: ClientApp | None = None,
             model_file: Path | None = None) -> dict[str, Any]:
    """Run one strategy with ``run_simulation`` and return the ServerApp's result.

    ``client_app``: the ClientApp every simulated SuperNode runs (default: fedcl's,
    :mod:`fedcl.federated.client_app`); another one must answer the same messages.
    ``model_file``: where the ServerApp saves the final global model (None: not saved).
    """
    from flwr.simulation import run_simulation

    from fedcl.federated.server_app import make_server_app

    if client_app is None:
        from fedcl.federated.client_app import app as client_app

    # Ray starts its workers (the simulated clients) at niceness 15, so that any other process on the
    # machine, the ServerApp's own training included, starves them; measured here: a one-shot round
    # whose client got 5% of a core beside two ordinary jobs. Clients are the workload: run them at
    # the niceness of the rest (a user's RAY_worker_niceness still wins).
    os.environ.setdefault("RAY_worker_niceness", "0")
    sink: dict[str, Any] = {}
    backend = {"client_resources": {"num_cpus": float(cfg.client_resources.num_cpus),
                                    "num_gpus": float(cfg.client_resources.num_gpus)},
               "init_args": {"num_cpus": max(1, int(cfg.threads * 2)), "include_dashboard": False}}
    overrides = {**run_config(cfg, strategy), **({"model-file": str(model_file)} if model_file else {})}
    run_simulation(make_server_app(overrides, sink), client_app, num_supernodes=cfg.num_clients,
                   backend_config=backend)
    if "result" not in sink:
        raise RuntimeError(f"the {strategy} simulation ended without a result (see the Flower log above)")
    return sink["result"]


def centralised(cfg: FederatedConfig) -> dict[str, Any]:
    """The same model trained on all the training data (the bar the summaries aim at): real images, so
    without ``server_noise`` and ``server_standardize``, which are meant for DP summaries, at the
    learning rate ``lr``."""
    import dataclasses

    from fedcl.federated.task import TaskSettings, load_data, make_model, train_global

    s = dataclasses.replace(TaskSettings.from_record(run_config(cfg, "oneshot")), server_noise=0.0,
                            server_standardize=False)
    data = load_data(s.dataset, s.data_root)
    t0 = time.perf_counter()
    model = make_model(s, data, seed=cfg.seed)
    acc = train_global(s, model, data.train_images, data.train_labels, data, epochs=cfg.central_epochs, seed=cfg.seed,
                       lr=cfg.lr)
    return {"final_accuracy": acc, "epochs": cfg.central_epochs, "train_images": int(len(data.train_labels)),
            "seconds": time.perf_counter() - t0}


def run_federated(cfg: FederatedConfig, client_app: ClientApp | None = None,
                  folder: Path | None = None) -> dict[str, Any]:
    """Run every configured strategy (and the centralised baseline); return metrics.json's content.

    ``client_app``: the ClientApp of the simulated clients (default: fedcl's; see :func:`simulate`).
    ``folder``: the run folder that gets each strategy's final global model
    (:func:`fedcl.models.saved.artifact_paths`: ``model.safetensors``, or ``models/<strategy>.safetensors``).
    """
    import torch

    from fedcl.models.saved import artifact_paths

    torch.set_num_threads(cfg.threads)
    _validate(cfg)
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    for name in cfg.strategies:
        model_file = artifact_paths(folder.resolve(), name, cfg.strategies, "model")[0] if folder else None
        r = simulate(cfg, name, client_app, model_file)
        r.pop("config", None)
        results[name] = r
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
    _validate(cfg)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    with run_folder(cfg.out, f"federated-{cfg.dataset}") as folder:  # a failed run leaves no folder
        metrics = run_federated(cfg, folder=folder)
        save_config(folder, cfg)
        write_json(folder / "metrics.json", metrics)
        write_report(folder, metrics)
    for name, r in metrics["strategies"].items():
        print(f"{name:8s} accuracy {r['final_accuracy']:.4f}  uplink {r['uplink_bytes']:,} B  "
              f"dropped {r['dropped_summaries']}  refused {r['refused_summaries']}")
    if "centralised" in metrics:
        print(f"centralised accuracy {metrics['centralised']['final_accuracy']:.4f}")
    return 0
