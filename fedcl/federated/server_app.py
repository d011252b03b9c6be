"""fedcl ServerApp: runs one strategy (``oneshot``, ``feddm`` or Flower's ``fedavg``) and reports.

Run-config keys (kebab-case, defaults in ``[tool.flwr.app.config]``): every
:class:`~fedcl.federated.task.TaskSettings` key plus ``strategy``, ``num-rounds``,
``min-nodes`` (wait for / sample at least this many), ``min-summaries`` (fail below this
many valid summaries), ``round-timeout`` (seconds), ``result-file`` (write the result
JSON there; "" to skip) and ``model-file`` (save the final global model there with
:func:`fedcl.models.save_model`; "" to skip).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, Strategy

from fedcl.federated.accounting import CountingGrid
from fedcl.federated.task import TaskSettings, load_data, make_model, train_global
from fedcl.federated.validate import SummarySpec, default_max_bytes
from fedcl.models.saved import data_meta, save_model
from fedcl.registry import Registry
from strategies.summaries import FedDMSummaries, OneShotSummaries

__all__ = ["STRATEGIES", "SERVER_DEFAULTS", "app", "make_server_app", "privacy_table", "run_server"]

SERVER_DEFAULTS: dict[str, Any] = {"strategy": "oneshot", "num-rounds": 1, "min-nodes": 2, "min-summaries": 1,
                                   "round-timeout": 3600.0, "result-file": "", "model-file": "",
                                   "max-summary-images": 0}

#: name -> ``build(settings, cfg, spec, train_fn) -> (strategy, num_rounds, task)``
STRATEGIES: Registry[tuple[Strategy, int, str]] = Registry("federated strategy")


@STRATEGIES.register("oneshot")
def _oneshot(s: TaskSettings, cfg: dict, spec: SummarySpec, train_fn: Callable) -> tuple[Strategy, int, str]:
    n = int(cfg["min-nodes"])
    return OneShotSummaries(train_fn, spec, codec=s.codec, min_train_nodes=n, min_available_nodes=n,
                            min_summaries=int(cfg["min-summaries"])), 1, "summary"


@STRATEGIES.register("feddm")
def _feddm(s: TaskSettings, cfg: dict, spec: SummarySpec, train_fn: Callable) -> tuple[Strategy, int, str]:
    n = int(cfg["min-nodes"])
    return FedDMSummaries(train_fn, spec, codec=s.codec, min_train_nodes=n, min_available_nodes=n,
                          min_summaries=int(cfg["min-summaries"])), int(cfg["num-rounds"]), "summary"


@STRATEGIES.register("fedavg")
def _fedavg(s: TaskSettings, cfg: dict, spec: SummarySpec, train_fn: Callable) -> tuple[Strategy, int, str]:
    n = int(cfg["min-nodes"])
    return FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n), \
        int(cfg["num-rounds"]), "fedavg"


def run_server(grid: Grid, run_config: dict[str, Any]) -> dict[str, Any]:
    """Run the configured strategy on ``grid`` and return the JSON-ready result.

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
    cfg = {**SERVER_DEFAULTS, **run_config}
    s = TaskSettings.from_record(cfg)
    torch.set_num_threads(int(cfg.get("server-threads", 1)))
    data = load_data(s.dataset, s.data_root)
    max_images = int(cfg["max-summary-images"]) or s.ipc * data.num_classes
    spec = SummarySpec(data.image_shape, data.num_classes, max_images, default_max_bytes(max_images, data.image_shape))
    model = make_model(s, data, seed=s.seed)

    def train_fn(images: torch.Tensor, labels: torch.Tensor, arrays: ArrayRecord, server_round: int) -> ArrayRecord:
        if len(arrays):
            model.load_state_dict(arrays.to_torch_state_dict())
        train_global(s, model, images, labels, data, epochs=s.server_epochs, seed=s.seed + server_round)
        return ArrayRecord(model.state_dict())

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        net = make_model(s, data)
        net.load_state_dict(arrays.to_torch_state_dict())
        from fedcl.train import class_accuracy, predict

        pred = predict(net, data.test_images, device=s.device)
        return MetricRecord({"accuracy": int((pred == data.test_labels).sum()) / max(len(pred), 1),
                             "class-accuracy": class_accuracy(pred, data.test_labels, data.num_classes)})

    name = str(cfg["strategy"])
    strategy, rounds, task = STRATEGIES.get(name)(s, cfg, spec, train_fn)
    counting = CountingGrid(grid)
    t0 = time.perf_counter()
    result = strategy.start(grid=counting, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=rounds,
                            timeout=float(cfg["round-timeout"]),
                            train_config=ConfigRecord({**s.to_record(), "task": task, "num-rounds": rounds}), evaluate_fn=evaluate_fn)
    evals = [result.evaluate_metrics_serverapp[r] for r in sorted(result.evaluate_metrics_serverapp)]
    acc = [float(m["accuracy"]) for m in evals]
    union = getattr(strategy, "union_class_images", None)
    dropped = list(getattr(strategy, "dropped", []))
    refused = list(getattr(strategy, "refused", []))
    client_metrics = getattr(strategy, "client_metrics", {})
    if cfg["model-file"]:  # the final global model (empty arrays: no round changed it), rebuilt without pickle
        if len(result.arrays):
            model.load_state_dict(result.arrays.to_torch_state_dict())
        save_model(str(cfg["model-file"]), model, name=s.model, kwargs=s.model_kwargs, in_shape=data.image_shape,
                   num_classes=data.num_classes, meta={**data_meta(data), "strategy": name, "rounds": rounds,
                                                       "final_accuracy": acc[-1] if acc else None})
    return {"strategy": name, "final_accuracy": acc[-1] if acc else math.nan, "accuracy_per_round": acc,
            "class_accuracy": [float(a) for a in evals[-1]["class-accuracy"]] if evals else [],
            "summary_class_images": union,
            "rounds": rounds, **counting.totals(), "dropped_summaries": len(dropped), "dropped": dropped,
            "refused_summaries": len(refused),
            "refused": [{k: r[k] for k in ("round", "node", "reason")} for r in refused],
            "privacy_per_client": privacy_table(client_metrics, refused),
            "summary_images": sum(int(m[-1].get("summary-images", 0)) for m in client_metrics.values()),
            "seconds": time.perf_counter() - t0, "config": {k: v for k, v in cfg.items() if not isinstance(v, bytes)}}


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


def make_server_app(overrides: dict[str, Any] | None = None, sink: dict[str, Any] | None = None) -> ServerApp:
    """A ServerApp whose run config is ``context.run_config`` updated with ``overrides``.

    ``run_simulation`` has no run-config argument, so the ``fedcl federated`` command builds
    its ServerApp here; the result is stored in ``sink["result"]`` (and in ``result-file``).
    """
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = {**dict(context.run_config), **(overrides or {})}
        result = run_server(grid, cfg)
        if sink is not None:
            sink["result"] = result
        if cfg.get("result-file"):
            path = Path(str(cfg["result-file"]))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=2, default=str))

    return server


app = make_server_app()
