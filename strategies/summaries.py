"""Flower strategies that learn the global model from client summaries (distilled synthetic sets).

- :class:`OneShotSummaries`: one round; every sampled client sends a summary once, the
  server trains the global model on their union.
- :class:`FedDMSummaries`: several rounds in the style of FedDM (Xiong et al., CVPR 2023):
  the server sends the current global model, each client distills a summary matched in
  that model's (randomly perturbed) feature space, the server updates the model on the
  union of the summaries received so far.

Both validate every summary (:func:`fedcl.federated.validate.validate_summary`, or for a
summary of parameterised memories, sent with a ``summary-memory`` ``ConfigRecord``,
:func:`~fedcl.federated.validate.validate_memory_summary`, which rebuilds and decodes them) and
drop bad ones with a logged reason. A client over its privacy budget answers with a refusal
(a ``refusal`` ``ConfigRecord``), which is logged and counted apart from the dropped
summaries. A round fails with :class:`fedcl.errors.SummaryRejected` only when fewer than
``min_summaries`` valid summaries remain of the clients that did not refuse; a round in
which every client refused keeps the global model as it is. Training on the union is a
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
from fedcl.federated.validate import SummarySpec, validate_reply

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
        Fail the round when fewer valid summaries than this arrive (or than the clients
        that did not refuse, when fewer).
    """

    # pylint: disable=too-many-arguments
    def __init__(self, train_fn: TrainFn, spec: SummarySpec, *, codec: str = "float32", send_model: bool = False,
                 accumulate: bool = True, fraction_train: float = 1.0, min_train_nodes: int = 2,
                 min_available_nodes: int = 2, min_summaries: int = 1) -> None:
        self.train_fn = train_fn
        self.spec = spec
        self.codec = codec
        self.send_model = send_model
        self.accumulate = accumulate
        self.fraction_train = fraction_train
        self.min_train_nodes = min_train_nodes
        self.min_available_nodes = min_available_nodes
        self.min_summaries = min_summaries
        self.dropped: list[dict[str, object]] = []
        self.refused: list[dict[str, object]] = []
        self.summaries: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.client_metrics: dict[int, list[dict[str, object]]] = {}
        self._arrays = ArrayRecord()
        self._asked: set[int] = set()
        self._trained_labels: torch.Tensor | None = None

    @property
    def union_class_images(self) -> list[int] | None:
        """Images per class in the union of summaries the server last trained on (None before any)."""
        if self._trained_labels is None:
            return None
        labels = self._trained_labels
        hard = labels.argmax(1) if labels.ndim == 2 else labels.long()
        return torch.bincount(hard, minlength=self.spec.num_classes).tolist()

    def training_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels the global model trains on: the union of the kept summaries (hard labels
        become one-hot rows when any summary has soft labels)."""
        labels = [y for _, y in self.summaries.values()]
        if any(y.ndim == 2 for y in labels):
            labels = [torch.nn.functional.one_hot(y, self.spec.num_classes).float() if y.ndim == 1 else y
                      for y in labels]
        return torch.cat([x for x, _ in self.summaries.values()]), torch.cat(labels)

    def summary(self) -> None:
        """Log the strategy's configuration."""
        log(INFO, "\t├──> %s: codec=%s send_model=%s accumulate=%s", type(self).__name__,
            self.codec, self.send_model, self.accumulate)
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

    def _refuse(self, server_round: int, node: int, reason: str, metrics: dict[str, object]) -> None:
        log(WARNING, "node %d refused its summary in round %d: %s", node, server_round, reason)
        self.refused.append({"round": server_round, "node": node, "reason": reason, "metrics": metrics})

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate each summary, drop the bad ones, count the refusals, train the global model on the union."""
        fresh: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        refused = 0
        replies = list(replies)
        # a node that never answers (dead, or slower than the round timeout) is a dropped summary too
        for node in sorted(self._asked - {int(m.metadata.src_node_id) for m in replies}):
            self._drop(server_round, node, "no reply within the round timeout")
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            if msg.has_error():
                self._drop(server_round, node, f"client error: {msg.error.reason}")
                continue
            metrics = dict(msg.content["metrics"]) if "metrics" in msg.content.metric_records else {}
            if "refusal" in msg.content.config_records:
                refused += 1
                self._refuse(server_round, node, str(msg.content["refusal"].get("reason", "")), metrics)
                continue
            if "summary" not in msg.content.array_records:
                self._drop(server_round, node, "reply has no 'summary' ArrayRecord")
                continue
            try:
                fresh[node] = validate_reply(msg.content, self.codec, self.spec)
            except SummaryRejected as exc:
                self._drop(server_round, node, str(exc))
                continue
            if metrics:
                self.client_metrics.setdefault(node, []).append({"round": server_round, **metrics})
        # a refusal is an answer, not a failure: the minimum counts only the clients that did not refuse
        needed = min(self.min_summaries, max(len(self._asked) - refused, 0))
        if len(fresh) < needed:
            reasons = "; ".join(d["reason"] for d in self.dropped if d["round"] == server_round) or "no replies"
            raise SummaryRejected(f"round {server_round}: only {len(fresh)} valid summaries, fewer than the minimum "
                                  f"{self.min_summaries} ({reasons})")
        metrics = MetricRecord({"valid-summaries": len(fresh), "refused-summaries": refused,
                                "dropped-summaries": sum(d["round"] == server_round for d in self.dropped)})
        if not fresh:  # every client refused: nothing new to learn from, the global model stays as it is
            log(INFO, "round %d: no new summary (%d refused); the global model is kept", server_round, refused)
            return None, metrics
        self.summaries = {**self.summaries, **fresh} if self.accumulate else fresh
        images, labels = self.training_set()
        self._trained_labels = labels
        arrays = self.train_fn(images, labels, self._arrays, server_round)
        metrics["union-images"] = int(len(labels))
        metrics["union-class-images"] = self.union_class_images
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
