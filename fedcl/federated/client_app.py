"""fedcl ClientApp: distills its partition into a summary (or, for FedAvg, trains the global model).

One ``train`` handler serves every strategy; the ``task`` key of the message's
``ConfigRecord`` picks the work:

- ``summary``: distill the partition (in the received model's perturbed feature space
  when the message carries ``arrays``: FedDM) and reply with the summary ``ArrayRecord``
  under ``summary`` (with ``param`` other than ``images`` or ``soft_labels``: the memories'
  stored tensors, their descriptions in a ``summary-memory`` ``ConfigRecord``) plus a ``MetricRecord`` (``num-examples``, ``summary-bytes``,
  ``epsilon``, ``releases``, ``seconds``). Under DP, a client whose summary would take its
  ledger over ``budget`` replies instead with a ``refusal`` ``ConfigRecord`` (``reason``)
  and the same ``MetricRecord`` without a summary: a normal answer, not an error;
- ``fedavg``: load ``arrays``, train locally, reply with the new ``arrays``.

The data comes from ``context.node_config``: in a deployment ``data-path`` (the node's own
image folder, or torchvision root of ``dataset``; :func:`~fedcl.federated.task.load_node_data`),
which never leaves the node; in a simulation the partition ``partition-id`` of
``num-partitions``. A bad data path is a DataError: the reply is an error, which the server
drops with its reason, and the run goes on with the other nodes;
the settings from ``context.run_config``, read and validated by
:func:`fedcl.federated.config.from_run_config` as the ServerApp and ``fedcl federated`` read
them (a bad value is a ConfigError: the reply is an error, the server drops it with its
reason). The message's ``ConfigRecord`` says only what to do: ``task``, ``strategy`` (each
strategy of a run keeps its own privacy ledger, as if it were its own run) and ``server-round``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcl.errors import ConfigError, PrivacyError
from fedcl.federated.codec import encode_memory_summary, encode_summary
from fedcl.federated.config import FederatedConfig, from_run_config
from fedcl.federated.task import (
    check_budget,
    client_seed,
    distill_partition,
    load_node_data,
    load_partition,
    make_model,
    perturbed_network_fn,
    plan_summary,
    run_data,
    train_local,
)

__all__ = ["app", "summary_records", "train"]

app = ClientApp()


def _settings(msg: Message, context: Context) -> tuple[FederatedConfig, dict]:
    s = from_run_config(context.run_config)
    torch.set_num_threads(s.threads)
    config = dict(msg.content["config"]) if "config" in msg.content.config_records else {}
    return s, config


def _node_data(s: FederatedConfig, context: Context) -> tuple[Any, torch.Tensor, torch.Tensor, int]:
    """The dataset, this node's training images and labels, and its id in seeds and metrics: its own
    ``data-path`` (a deployment) or the partition ``partition-id`` of ``num-partitions`` (a simulation)."""
    node = context.node_config
    if "data-path" in node:
        data = load_node_data(s, str(node["data-path"]))
        # no partition: seeds and the privacy table key on the node (its partition-id when it sets one)
        pid = int(node["partition-id"]) if "partition-id" in node else int(context.node_id % 1_000_003)
        return data, data.train_images, data.train_labels, pid
    if "partition-id" not in node or "num-partitions" not in node:
        raise ConfigError("this SuperNode has no data: start it with --node-config \"data-path=DIR\" "
                          "(its own images) or, in a simulation, partition-id and num-partitions")
    pid = int(node["partition-id"])
    data = run_data(s)
    images, labels = load_partition(s, pid, int(node["num-partitions"]))
    return data, images, labels, pid


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Handle one training message (``task`` = ``summary`` or ``fedavg``)."""
    s, config = _settings(msg, context)
    t0 = time.perf_counter()
    data, images, labels, pid = _node_data(s, context)
    server_round = int(config.get("server-round", 1))
    seed = client_seed(s, pid, server_round)
    if config.get("task", "summary") == "fedavg":
        model = make_model(s, data)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        acc = train_local(s, model, images, labels, seed=seed)
        metrics = {"num-examples": int(len(labels)), "train-accuracy": acc, "seconds": time.perf_counter() - t0}
        return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord(metrics)}),
                       reply_to=msg)

    privacy, ledger = _privacy(s, context, str(config.get("strategy", "")))
    metrics: dict[str, Any] = {"num-examples": int(len(labels)), "partition-id": pid}
    if ledger is not None:
        # the budget stop: planned from class counts, before any image is read
        try:
            check_budget(ledger, plan_summary(s, labels, data.num_classes, privacy), name=f"round {server_round}")
        except PrivacyError as exc:
            metrics.update(_ledger_metrics(ledger), seconds=time.perf_counter() - t0)
            return Message(RecordDict({"refusal": ConfigRecord({"reason": str(exc)}),
                                       "metrics": MetricRecord(metrics)}), reply_to=msg)
    network_fn = None
    if "arrays" in msg.content.array_records and len(msg.content["arrays"]):
        model = make_model(s, data)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        network_fn = perturbed_network_fn(model, s.rho, seed)
    x, y, groups = distill_partition(s, images, labels, data, seed=seed, network_fn=network_fn, privacy=privacy,
                                     ledger=ledger)
    _spend(ledger, groups, context, server_round, str(config.get("strategy", "")))
    content = summary_records(s, x, y, groups)
    metrics.update(_ledger_metrics(ledger), **{"summary-images": int(len(y)),
                                               "summary-bytes": content["summary"].count_bytes(),
                                               "seconds": time.perf_counter() - t0})
    return Message(RecordDict({**content, "metrics": MetricRecord(metrics)}), reply_to=msg)


def summary_records(s: FederatedConfig, x: torch.Tensor, y: torch.Tensor, groups: list[dict[str, Any]]) -> dict[str, Any]:
    """A reply's summary records for :func:`~fedcl.federated.task.distill_partition`'s output: the ``summary``
    ``ArrayRecord`` in ``s.codec``, holding the decoded images ``x`` and labels ``y``, or, for a parameterisation
    or soft labels, what the memories store, with their descriptions (``summary-memory``)."""
    if s.param != "images" or s.soft_labels:
        summary, described = encode_memory_summary([g["set"].memory for g in groups], s.codec)
        return {"summary": summary, "summary-memory": described}
    return {"summary": encode_summary(x, y, s.codec)}


def _ledger_key(strategy: str) -> str:
    return f"privacy-ledger-{strategy}" if strategy else "privacy-ledger"


def _privacy(s: FederatedConfig, context: Context, strategy: str = ""):
    """The DP block of one release and the client's ledger of ``strategy`` (kept in ``context.state``
    across rounds).

    Each summary is one release at ``privacy.epsilon``; the ledger composes them with the release's
    own accountant (Opacus RDP or PRV) and caps the total at ``privacy.budget`` (0: no cap, the
    total is only recorded).
    """
    p = s.privacy
    if not p.epsilon:
        return None, None
    from fedcl.privacy.ledger import PrivacyLedger

    saved = context.state.config_records.get(_ledger_key(strategy))
    ledger = (PrivacyLedger.from_dict(json.loads(str(saved["json"]))) if saved is not None
              else PrivacyLedger(epsilon=p.budget or None, delta=p.delta, accountant=p.accountant,
                                 owner=f"client-{context.node_id}"))
    return p.release(), ledger


def _ledger_metrics(ledger) -> dict[str, Any]:
    """What a reply says of the client's privacy: its total epsilon, releases and budget (0: none)."""
    if ledger is None:
        return {"epsilon": 0.0, "releases": 0}
    return {"epsilon": float(ledger.spent()), "releases": len(ledger.releases),
            "budget": 0.0 if ledger.epsilon is None else float(ledger.epsilon)}


def _spend(ledger, groups: list[dict], context: Context, server_round: int, strategy: str = "") -> None:
    """Record this round's release in the ledger and keep the ledger in ``context.state``.

    Groups hold disjoint classes (parallel composition), so one round costs its most
    expensive group: that group's release is recorded.
    """
    if ledger is None:
        return
    releases = [g["privacy"] for g in groups if isinstance(g.get("privacy"), dict)]
    if releases:
        worst = max(releases, key=lambda r: float(r.get("epsilon", 0.0)))
        ledger.record(worst, name=f"round {server_round}")
    context.state[_ledger_key(strategy)] = ConfigRecord({"json": json.dumps(ledger.to_dict())})
