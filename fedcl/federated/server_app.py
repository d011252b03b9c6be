"""fedcl ServerApp: runs each strategy of the run config (``oneshot``, ``feddm``, Flower's ``fedavg``) and reports.

The run config (``context.run_config``: ``[tool.flwr.app.config]`` in pyproject.toml and
``flwr run --run-config`` over it) is read with
:func:`fedcl.federated.config.from_run_config`, the same validation as ``fedcl federated``'s
command line. A bad value ends the ServerApp with one ``fedcl: error: ...`` line in its log
(and ``{"error": {"type", "message"}}`` in ``result-file``), as does any other
:class:`~fedcl.errors.FedclError` (a round below ``min-summaries``, missing data...).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from logging import ERROR
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, Strategy
from flwr.supercore import log

from fedcl.data import ImageData
from fedcl.errors import FedclError
from fedcl.federated.accounting import CountingGrid
from fedcl.federated.config import FederatedConfig, from_run_config, to_run_config
from fedcl.federated.task import make_model, server_data, train_global
from fedcl.federated.validate import SummarySpec, default_max_bytes, memory_max_bytes
from fedcl.registry import Registry
from strategies.summaries import FedDMSummaries, OneShotSummaries

__all__ = ["STRATEGIES", "app", "main", "privacy_table", "run_server", "run_strategy", "summary_spec"]

#: name -> ``build(cfg, spec, train_fn) -> (strategy, task)``; the ``task`` tells clients what to do
STRATEGIES: Registry[tuple[Strategy, str]] = Registry("federated strategy")


def summary_spec(cfg: FederatedConfig, data: ImageData) -> SummarySpec:
    """What a valid client summary of this run looks like (the server's checks, for ``data``'s images)."""
    max_images = cfg.max_summary_images or cfg.ipc * data.num_classes
    if cfg.param != "images" or cfg.soft_labels:  # summaries of memories: their stored tensors, soft labels
        max_bytes = memory_max_bytes(cfg.param, cfg.param_kwargs, cfg.soft_labels, max_images, data.num_classes,
                                     data.image_shape)
    else:
        max_bytes = default_max_bytes(max_images, data.image_shape)
    return SummarySpec(data.image_shape, data.num_classes, max_images, max_bytes)


@STRATEGIES.register("oneshot")
def _oneshot(cfg: FederatedConfig, spec: SummarySpec, train_fn: Callable) -> tuple[Strategy, str]:
    n = cfg.num_clients
    return OneShotSummaries(train_fn, spec, codec=cfg.codec, min_train_nodes=n, min_available_nodes=n,
                            min_summaries=cfg.min_summaries), "summary"


@STRATEGIES.register("feddm")
def _feddm(cfg: FederatedConfig, spec: SummarySpec, train_fn: Callable) -> tuple[Strategy, str]:
    n = cfg.num_clients
    return FedDMSummaries(train_fn, spec, codec=cfg.codec, min_train_nodes=n, min_available_nodes=n,
                          min_summaries=cfg.min_summaries), "summary"


@STRATEGIES.register("fedavg")
def _fedavg(cfg: FederatedConfig, spec: SummarySpec, train_fn: Callable) -> tuple[Strategy, str]:
    n = cfg.num_clients
    return FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n), "fedavg"


def run_server(grid: Grid, cfg: FederatedConfig) -> dict[str, Any]:
    """Run every strategy of ``cfg.strategies`` on ``grid``, one after the other.

    Returns:
        ``{"strategies": {name: result}, "config": run config}`` (see :func:`run_strategy`).
    """
    torch.set_num_threads(cfg.threads)
    results = {name: run_strategy(grid, cfg, name) for name in cfg.strategies}
    return {"strategies": results, "config": to_run_config(cfg)}


def run_strategy(grid: Grid, cfg: FederatedConfig, name: str) -> dict[str, Any]:
    """Run strategy ``name`` on ``grid`` from a fresh global model and return the JSON-ready result.

    Returns:
        ``{strategy, final_accuracy, accuracy_per_round, class_accuracy, summary_class_images,
        uplink_bytes, downlink_bytes, rounds, dropped_summaries, dropped, refused_summaries, refused,
        privacy_per_client, seconds, ...}`` (accuracies in [0, 1]; ``accuracy_per_round[0]`` is the
        initial model; ``class_accuracy`` is the final model's recall per class;
        ``summary_class_images`` counts the images per class of the union of summaries the server
        last trained on, None for weight-averaging strategies; ``refused`` lists the summaries
        clients refused to make over their privacy budget; ``privacy_per_client`` is each DP
        client's ledger as its last reply stated it, by partition id: ``{epsilon, releases,
        budget, refused}``, the total epsilon of its releases at ``delta``, budget None for no cap).
    """
    data = server_data(cfg)
    spec = summary_spec(cfg, data)
    model = make_model(cfg, data, seed=cfg.seed)

    def train_fn(images: torch.Tensor, labels: torch.Tensor, arrays: ArrayRecord, server_round: int) -> ArrayRecord:
        if len(arrays):
            model.load_state_dict(arrays.to_torch_state_dict())
        train_global(cfg, model, images, labels, data, epochs=cfg.server_epochs, seed=cfg.seed + server_round)
        return ArrayRecord(model.state_dict())

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        net = make_model(cfg, data)
        net.load_state_dict(arrays.to_torch_state_dict())
        from fedcl.train import class_accuracy, predict

        pred = predict(net, data.test_images, device=cfg.device)
        return MetricRecord({"accuracy": int((pred == data.test_labels).sum()) / max(len(pred), 1),
                             "class-accuracy": class_accuracy(pred, data.test_labels, data.num_classes)})

    strategy, task = STRATEGIES.get(name)(cfg, spec, train_fn)
    rounds = cfg.num_rounds(name)
    counting = CountingGrid(grid)
    t0 = time.perf_counter()
    # clients read the settings from their own run config; the message says only what to do
    result = strategy.start(grid=counting, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=rounds,
                            timeout=cfg.round_timeout, train_config=ConfigRecord({"task": task, "strategy": name}),
                            evaluate_fn=evaluate_fn if cfg.data.server_test else None)
    evals = [result.evaluate_metrics_serverapp[r] for r in sorted(result.evaluate_metrics_serverapp)]
    acc = [float(m["accuracy"]) for m in evals]
    if cfg.model_dir:
        save_global_model(cfg, name, model, result.arrays, data, rounds, acc[-1] if acc else None)
    union = getattr(strategy, "union_class_images", None)
    dropped = list(getattr(strategy, "dropped", []))
    refused = list(getattr(strategy, "refused", []))
    client_metrics = getattr(strategy, "client_metrics", {})
    # no test set (data.server_test=false): no accuracy, None in the JSON
    final = (acc[-1] if acc else math.nan) if cfg.data.server_test else None
    return {"strategy": name, "final_accuracy": final, "accuracy_per_round": acc,
            "class_accuracy": [float(a) for a in evals[-1]["class-accuracy"]] if evals else [],
            "summary_class_images": union,
            "rounds": rounds, **counting.totals(), "dropped_summaries": len(dropped), "dropped": dropped,
            "refused_summaries": len(refused),
            "refused": [{k: r[k] for k in ("round", "node", "reason")} for r in refused],
            "privacy_per_client": privacy_table(client_metrics, refused),
            "summary_images": sum(int(m[-1].get("summary-images", 0)) for m in client_metrics.values()),
            "seconds": time.perf_counter() - t0}


def save_global_model(cfg: FederatedConfig, name: str, model: torch.nn.Module, arrays: ArrayRecord, data: Any,
                      rounds: int, accuracy: float | None) -> None:
    """Save strategy ``name``'s final global model in ``cfg.model_dir`` (rebuilt without pickle by
    :func:`fedcl.models.load_model`); empty arrays mean no round changed the initial model."""
    from pathlib import Path

    from fedcl.models.saved import artifact_paths, data_meta, save_model

    if len(arrays):
        model.load_state_dict(arrays.to_torch_state_dict())
    path = artifact_paths(Path(cfg.model_dir), name, cfg.strategies, "model")[0]
    save_model(path, model, name=cfg.model, kwargs=cfg.model_kwargs, in_shape=data.image_shape,
               num_classes=data.num_classes, meta={**data_meta(data), "strategy": name, "rounds": rounds,
                                                   "final_accuracy": accuracy})


def privacy_table(client_metrics: dict[int, list[dict[str, Any]]], refused: list[dict[str, Any]]) -> dict[str, Any]:
    """Each DP client's ledger, by partition id, from its latest reply (a summary's or a refusal's
    metrics): ``{epsilon, releases, budget, refused}``; empty without DP."""
    latest: dict[int, dict[str, Any]] = {}
    counts: dict[int, int] = {}
    replies = [(n, m) for n, ms in client_metrics.items() for m in ms]
    replies += [(int(r["node"]), {"round": r["round"], **r.get("metrics", {})}) for r in refused]
    for node, m in sorted(replies, key=lambda nm: int(nm[1].get("round", 0))):
        latest[node] = m
    for r in refused:
        counts[int(r["node"])] = counts.get(int(r["node"]), 0) + 1
    table = {}
    for node, m in latest.items():
        if int(m.get("releases", 0)) or node in counts:
            budget = float(m.get("budget", 0.0))
            table[str(int(m.get("partition-id", node)))] = {
                "epsilon": float(m.get("epsilon", 0.0)), "releases": int(m.get("releases", 0)),
                "budget": budget or None, "refused": counts.get(node, 0)}
    return dict(sorted(table.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else kv[0]))


def _write(path: str, payload: dict[str, Any]) -> None:
    if path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(payload, indent=2, default=str))


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Read and validate the run config, run its strategies, write ``result-file``."""
    result_file = str(context.run_config.get("result-file", ""))
    try:
        cfg = from_run_config(context.run_config, check_data=True)
        result = run_server(grid, cfg)
    except FedclError as exc:  # bad input or a failed round: one line, not a traceback
        log(ERROR, "fedcl: error: %s", exc)
        _write(result_file, {"error": {"type": type(exc).__name__, "message": str(exc)}})
        return
    _write(cfg.result_file, result)
