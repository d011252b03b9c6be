"""fedcl ClientApp: distills its partition into a summary (or, for FedAvg, trains the global model).

One ``train`` handler serves every strategy; the ``task`` key of the message's
``ConfigRecord`` picks the work:

- ``summary``: distill the partition (in the received model's perturbed feature space
  when the message carries ``arrays``: FedDM) and reply with the summary ``ArrayRecord``
  under ``summary`` plus a ``MetricRecord`` (``num-examples``, ``summary-bytes``,
  ``epsilon``, ``seconds``);
- ``fedavg``: load ``arrays``, train locally, reply with the new ``arrays``.

The partition comes from ``context.node_config`` (``partition-id``, ``num-partitions``);
settings from the message's config over ``context.run_config``.
"""

from __future__ import annotations

import json
import time

import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcl.federated.codec import encode_summary
from fedcl.federated.task import (
    TaskSettings,
    client_seed,
    distill_partition,
    load_data,
    load_partition,
    make_model,
    perturbed_network_fn,
    train_local,
)

__all__ = ["app"]

app = ClientApp()


def _settings(msg: Message, context: Context) -> tuple[TaskSettings, dict, int, int]:
    config = dict(msg.content["config"]) if "config" in msg.content.config_records else {}
    merged = {**dict(context.run_config), **config}
    torch.set_num_threads(int(merged.get("client-threads", 1)))
    return (TaskSettings.from_record(merged), merged, int(context.node_config["partition-id"]),
            int(context.node_config["num-partitions"]))


def _apply_fault(kind: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Test hook: corrupt a summary the way a buggy or malicious client would."""
    images, labels = images.clone(), labels.clone()
    if kind == "nan":
        images[0] = float("nan")
    elif kind == "shape":
        images = torch.nn.functional.pad(images, (0, 1, 0, 1))
    elif kind == "labels":
        labels[0] = num_classes + 3
    elif kind == "oversize":
        images, labels = images.repeat(50, 1, 1, 1), labels.repeat(50)
    return images, labels


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

    network_fn = None
    if "arrays" in msg.content.array_records and len(msg.content["arrays"]):
        model = make_model(s, data)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        network_fn = perturbed_network_fn(model, s.rho, seed)
    privacy, ledger = _privacy(s, context, int(merged.get("num-rounds", 1)))
    x, y, groups = distill_partition(s, images, labels, data, seed=seed, network_fn=network_fn, privacy=privacy,
                                     ledger=ledger)
    epsilon = _spend(ledger, groups, context, server_round)
    kind = s.faults().get(pid)
    if kind:
        x, y = _apply_fault(kind, x, y, data.num_classes)
    record = encode_summary(x, y, s.codec)
    if kind == "dtype":
        record["images"] = Array(x.double().numpy())
    metrics = {"num-examples": int(len(labels)), "summary-images": int(len(y)), "summary-bytes": record.count_bytes(),
               "epsilon": float(epsilon), "seconds": time.perf_counter() - t0, "partition-id": pid}
    return Message(RecordDict({"summary": record, "metrics": MetricRecord(metrics)}), reply_to=msg)


def _privacy(s: TaskSettings, context: Context, rounds: int):
    """The DP block of this round and the client's ledger (kept in ``context.state`` across rounds).

    The client's budget is ``epsilon`` over the whole run; each of the ``rounds`` releases
    asks for ``epsilon / rounds`` and the ledger composes them with the release's own
    accountant (Opacus RDP or PRV), so it refuses (PrivacyError, the reply carries the error)
    any release over the budget, before the release reads the partition.
    """
    if not s.epsilon:
        return None, None
    from fedcl.privacy.ledger import PrivacyLedger

    saved = context.state.config_records.get("privacy-ledger")
    ledger = (PrivacyLedger.from_dict(json.loads(str(saved["json"]))) if saved is not None
              else PrivacyLedger(epsilon=s.epsilon, delta=s.delta, accountant=s.accountant,
                             owner=f"client-{context.node_id}"))
    return s.privacy_config(rounds), ledger


def _spend(ledger, groups: list[dict], context: Context, server_round: int) -> float:
    """Record this round's releases in the ledger; returns the client's total epsilon so far.

    Groups hold disjoint classes (parallel composition), so one round costs its most
    expensive group: that group's release is recorded.
    """
    if ledger is None:
        return 0.0
    from flwr.app import ConfigRecord

    releases = [g["privacy"] for g in groups if isinstance(g.get("privacy"), dict)]
    if releases:
        worst = max(releases, key=lambda r: float(r.get("epsilon", 0.0)))
        ledger.record(worst, name=f"round {server_round}")
    context.state["privacy-ledger"] = ConfigRecord({"json": json.dumps(ledger.to_dict())})
    return float(ledger.spent())
