"""fedcl ClientApp: distills its partition into a summary (or, for FedAvg, trains the global model).

One ``train`` handler serves every strategy; the ``task`` key of the message's
``ConfigRecord`` picks the work:

- ``summary``: distill the partition (in the received model's perturbed feature space
  when the message carries ``arrays``: FedDM) and reply with the summary ``ArrayRecord``
  under ``summary`` plus a ``MetricRecord`` (``num-examples``, ``summary-bytes``,
  ``epsilon``, ``releases``, ``seconds``). Under DP, a client whose summary would take its
  ledger over ``budget`` replies instead with a ``refusal`` ``ConfigRecord`` (``reason``)
  and the same ``MetricRecord`` without a summary: a normal answer, not an error;
- ``fedavg``: load ``arrays``, train locally, reply with the new ``arrays``.

The partition comes from ``context.node_config`` (``partition-id``, ``num-partitions``);
settings from the message's config over ``context.run_config``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcl.errors import PrivacyError
from fedcl.federated.codec import encode_summary
from fedcl.federated.task import (
    TaskSettings,
    check_budget,
    client_seed,
    distill_partition,
    load_data,
    load_partition,
    make_model,
    perturbed_network_fn,
    plan_summary,
    train_local,
)

__all__ = ["app", "train"]

#: the ledger's epsilon when ``budget`` is 0 (no cap): the total is recorded, nothing is refused

app = ClientApp()


def _settings(msg: Message, context: Context) -> tuple[TaskSettings, dict, int, int]:
    config = dict(msg.content["config"]) if "config" in msg.content.config_records else {}
    merged = {**dict(context.run_config), **config}
    torch.set_num_threads(int(merged.get("client-threads", 1)))
    return (TaskSettings.from_record(merged), merged, int(context.node_config["partition-id"]),
            int(context.node_config["num-partitions"]))


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Handle one training message (``task`` = ``summary`` or ``fedavg``)."""
    s, merged, pid, num_parts = _settings(msg, context)
    t0 = time.perf_counter()
    data = load_data(s.dataset, s.data_root)
    images, labels = load_partition(s, pid, num_parts)
    server_round = int(merged.get("server-round", 1))
    seed = client_seed(s, pid, server_round)
    if merged.get("task", "summary") == "fedavg":
        model = make_model(s, data)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        acc = train_local(s, model, images, labels, seed=seed)
        metrics = {"num-examples": int(len(labels)), "train-accuracy": acc, "seconds": time.perf_counter() - t0}
        return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord(metrics)}),
                       reply_to=msg)

    privacy, ledger = _privacy(s, context)
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
    _spend(ledger, groups, context, server_round)
    record = encode_summary(x, y, s.codec)
    metrics.update(_ledger_metrics(ledger), **{"summary-images": int(len(y)), "summary-bytes": record.count_bytes(),
                                               "seconds": time.perf_counter() - t0})
    return Message(RecordDict({"summary": record, "metrics": MetricRecord(metrics)}), reply_to=msg)


def _privacy(s: TaskSettings, context: Context):
    """The DP block of one release and the client's ledger (kept in ``context.state`` across rounds).

    Each summary is one release at ``epsilon``; the ledger composes them with the release's own
    accountant (Opacus RDP or PRV) and caps the total at ``budget`` (0: no cap, the total is only
    recorded).
    """
    if not s.epsilon:
        return None, None
    from fedcl.privacy.ledger import PrivacyLedger

    saved = context.state.config_records.get("privacy-ledger")
    ledger = (PrivacyLedger.from_dict(json.loads(str(saved["json"]))) if saved is not None
              else PrivacyLedger(epsilon=s.budget or None, delta=s.delta, accountant=s.accountant,
                                 owner=f"client-{context.node_id}"))
    return s.privacy_config(), ledger


def _ledger_metrics(ledger) -> dict[str, Any]:
    """What a reply says of the client's privacy: its total epsilon, releases and budget (0: none)."""
    if ledger is None:
        return {"epsilon": 0.0, "releases": 0}
    return {"epsilon": float(ledger.spent()), "releases": len(ledger.releases),
            "budget": 0.0 if ledger.epsilon is None else float(ledger.epsilon)}


def _spend(ledger, groups: list[dict], context: Context, server_round: int) -> None:
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
    context.state["privacy-ledger"] = ConfigRecord({"json": json.dumps(ledger.to_dict())})
