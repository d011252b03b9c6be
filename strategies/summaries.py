"""Flower strategies that learn the global model from client summaries (distilled synthetic sets).

- :class:`OneShotSummaries`: one round; every sampled client sends a summary once, the
  server trains the global model on their union.
- :class:`FedDMSummaries`: several rounds in the style of FedDM (Xiong et al., CVPR 2023):
  the server sends the current global model, each client distills a summary matched in
  that model's (randomly perturbed) feature space, the server updates the model on the
  union of the summaries received so far.

Both validate every summary (:func:`fedcl.federated.validate.validate_summary`) and drop
bad ones with a logged reason; a round fails with :class:`fedcl.errors.SummaryRejected`
only when fewer than ``min_summaries`` valid summaries remain. Training on the union is a
callable supplied by the ServerApp, so the strategies hold no model code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from logging import INFO, WARNING

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.strategy_utils import sample_nodes
from flwr.supercore import log

from fedcl.errors import SummaryRejected
from fedcl.federated.select import select_summaries
from fedcl.federated.validate import SummarySpec, validate_summary

__all__ = ["FedDMSummaries", "OneShotSummaries", "SummaryStrategy", "TrainFn"]

#: ``train_fn(images, labels, arrays, server_round) -> ArrayRecord``: train the global
#: model (starting from ``arrays``) on the union of summaries and return its new arrays.
TrainFn = Callable[[torch.Tensor, torch.Tensor, ArrayRecord, int], ArrayRecord]


class SummaryStrategy(Strategy):
    """Collect validated client summaries and train the global model on their union.

    Parameters
    ----------
    train_fn : TrainFn
        Trains the global model on ``(images, labels)`` starting from the current arrays.
    spec : SummarySpec
        What a valid summary looks like (image shape, classes, image and byte caps).
    codec : str (default: "float32")
        Codec the clients must use (``float32``, ``float16``, ``uint8``).
    send_model : bool (default: False)
        Send the current global arrays with each request (FedDM matching).
    accumulate : bool (default: True)
        Train on every valid summary received so far (latest one per client);
        otherwise on this round's summaries only.
    fraction_train : float (default: 1.0)
        Fraction of connected nodes asked for a summary each round.
    min_train_nodes : int (default: 2)
        Minimum number of nodes asked each round.
    min_available_nodes : int (default: 2)
        Wait for this many connected nodes before sampling.
    min_summaries : int (default: 1)
        Fail the round when fewer valid summaries than this arrive.
    select_ratio : float (default: 0.0)
        If > 0, train on a selection of the union: per class, the summaries of the clients
        whose images of that class are at most this many times as rough as the smoothest
        client's (:func:`fedcl.federated.select.select_summaries`; for noisy DP summaries,
        whose small holders send mostly noise texture). 0 trains on the whole union.
    """

    # pylint: disable=too-many-arguments
    def __init__(self, train_fn: TrainFn, spec: SummarySpec, *, codec: str = "float32", send_model: bool = False,
                 accumulate: bool = True, fraction_train: float = 1.0, min_train_nodes: int = 2,
                 min_available_nodes: int = 2, min_summaries: int = 1, select_ratio: float = 0.0) -> None:
        self.train_fn = train_fn
        self.spec = spec
        self.codec = codec
        self.send_model = send_model
        self.accumulate = accumulate
        self.fraction_train = fraction_train
        self.min_train_nodes = min_train_nodes
        self.min_available_nodes = min_available_nodes
        self.min_summaries = min_summaries
        self.select_ratio = select_ratio
        self.dropped: list[dict[str, object]] = []
        self.summaries: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.client_metrics: dict[int, list[dict[str, object]]] = {}
        self._arrays = ArrayRecord()
        self._asked: set[int] = set()
        self._trained_labels: torch.Tensor | None = None

    @property
    def union_class_images(self) -> list[int] | None:
        """Images per class in the union of summaries the server last trained on (after
        ``select_ratio``'s selection; None before any)."""
        if self._trained_labels is None:
            return None
        return torch.bincount(self._trained_labels.long(), minlength=self.spec.num_classes).tolist()

    def training_set(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The images and labels the global model trains on (the union of the kept summaries,
        selected by ``select_ratio``) and how many union images the selection set aside."""
        images = torch.cat([x for x, _ in self.summaries.values()])
        labels = torch.cat([y for _, y in self.summaries.values()])
        if not self.select_ratio:
            return images, labels, 0
        # owners by position: Flower node ids are unsigned 64-bit and overflow an int64 tensor
        owners = torch.cat([torch.full((len(y),), i) for i, (_, y) in enumerate(self.summaries.values())])
        keep = select_summaries(images, labels, owners, self.select_ratio)
        return images[keep], labels[keep], int((~keep).sum())

    def summary(self) -> None:
        """Log the strategy's configuration."""
        log(INFO, "\t├──> %s: codec=%s send_model=%s accumulate=%s select_ratio=%s", type(self).__name__,
            self.codec, self.send_model, self.accumulate, self.select_ratio)
        log(INFO, "\t└──> Sampling: fraction %.2f, min nodes %d, min valid summaries %d", self.fraction_train,
            self.min_train_nodes, self.min_summaries)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Ask the sampled nodes for a summary (with the global model when ``send_model``)."""
        self._arrays = arrays
        num_nodes = int(len(list(grid.get_node_ids())) * self.fraction_train)
        node_ids, _ = sample_nodes(grid, self.min_available_nodes, max(num_nodes, self.min_train_nodes))
        log(INFO, "configure_train: asking %d nodes for a summary", len(node_ids))
        self._asked = {int(n) for n in node_ids}
        config = ConfigRecord({**dict(config), "server-round": server_round, "task": "summary", "codec": self.codec})
        content = {"config": config}
        if self.send_model:
            content["arrays"] = arrays
        return [Message(content=RecordDict(content), message_type=MessageType.TRAIN, dst_node_id=nid)
                for nid in node_ids]

    def _drop(self, server_round: int, node: int, reason: str) -> None:
        log(WARNING, "dropped the summary of node %d in round %d: %s", node, server_round, reason)
        self.dropped.append({"round": server_round, "node": node, "reason": reason})

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate each summary, drop the bad ones, train the global model on the union."""
        fresh: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        replies = list(replies)
        # a node that never answers (dead, or slower than the round timeout) is a dropped summary too
        for node in sorted(self._asked - {int(m.metadata.src_node_id) for m in replies}):
            self._drop(server_round, node, "no reply within the round timeout")
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            if msg.has_error():
                self._drop(server_round, node, f"client error: {msg.error.reason}")
                continue
            if "summary" not in msg.content.array_records:
                self._drop(server_round, node, "reply has no 'summary' ArrayRecord")
                continue
            try:
                fresh[node] = validate_summary(msg.content["summary"], self.codec, self.spec)
            except SummaryRejected as exc:
                self._drop(server_round, node, str(exc))
                continue
            if "metrics" in msg.content.metric_records:
                self.client_metrics.setdefault(node, []).append({"round": server_round, **dict(msg.content["metrics"])})
        if len(fresh) < self.min_summaries:
            reasons = "; ".join(d["reason"] for d in self.dropped if d["round"] == server_round) or "no replies"
            raise SummaryRejected(f"round {server_round}: only {len(fresh)} valid summaries, fewer than the minimum "
                                  f"{self.min_summaries} ({reasons})")
        self.summaries = {**self.summaries, **fresh} if self.accumulate else fresh
        images, labels, set_aside = self.training_set()
        self._trained_labels = labels
        arrays = self.train_fn(images, labels, self._arrays, server_round)
        metrics = MetricRecord({"valid-summaries": len(fresh), "union-images": int(len(labels)),
                                "set-aside-images": set_aside, "union-class-images": self.union_class_images,
                                "dropped-summaries": sum(d["round"] == server_round for d in self.dropped)})
        return arrays, metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """No federated evaluation: the server evaluates centrally (``evaluate_fn``)."""
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Nothing to aggregate (see :meth:`configure_evaluate`)."""
        return None


class OneShotSummaries(SummaryStrategy):
    """One-shot: a single round of summaries, no model sent down (run it with ``num_rounds=1``).

    Parameters
    ----------
    **kwargs
        See :class:`SummaryStrategy` (``send_model`` is fixed to False).
    """

    def __init__(self, train_fn: TrainFn, spec: SummarySpec, **kwargs: object) -> None:
        kwargs["send_model"] = False
        super().__init__(train_fn, spec, **kwargs)  # type: ignore[arg-type]


class FedDMSummaries(SummaryStrategy):
    """FedDM-style multi-round summaries matched in the current global model's feature space.

    Parameters
    ----------
    **kwargs
        See :class:`SummaryStrategy` (``send_model`` is fixed to True).
    """

    def __init__(self, train_fn: TrainFn, spec: SummarySpec, **kwargs: object) -> None:
        kwargs["send_model"] = True
        super().__init__(train_fn, spec, **kwargs)  # type: ignore[arg-type]
