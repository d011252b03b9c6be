"""Communication accounting: a Grid wrapper that counts ``ArrayRecord`` bytes per node and round.

It works with any strategy (Flower's stock FedAvg included) because it sits between the
strategy and the Grid: every message sent down and every reply coming up passes through
:meth:`CountingGrid.send_and_receive`. Bytes are ``ArrayRecord.count_bytes()`` summed over
the message's array records (configs and metrics are a few hundred bytes and not counted).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from flwr.app import Message

__all__ = ["CountingGrid", "message_bytes"]


def message_bytes(msg: Message) -> int:
    """Bytes of every ``ArrayRecord`` in a message's content (0 for error replies)."""
    if msg.has_error():
        return 0
    return sum(rec.count_bytes() for rec in msg.content.array_records.values())


class CountingGrid:
    """Wrap a ``flwr.serverapp.Grid`` and count bytes up and down per node and round.

    Args:
        grid: the Grid given to the ServerApp.

    Attributes:
        down: ``{round: {node_id: bytes}}`` sent to nodes.
        up: ``{round: {node_id: bytes}}`` received from nodes.
    """

    def __init__(self, grid: Any) -> None:
        self._grid = grid
        self.down: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.up: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))

    def __getattr__(self, name: str) -> Any:  # everything else goes to the real Grid
        return getattr(self._grid, name)

    @staticmethod
    def _round(msg: Message) -> int:
        for rec in msg.content.config_records.values():
            if "server-round" in rec:
                return int(rec["server-round"])
        return 0

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Count, forward to the real Grid, count the replies."""
        messages = list(messages)
        rounds = {}
        for msg in messages:
            rnd = self._round(msg)
            rounds[msg.metadata.dst_node_id] = rnd
            self.down[rnd][msg.metadata.dst_node_id] += message_bytes(msg)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout)) if messages else []
        for reply in replies:
            node = reply.metadata.src_node_id
            self.up[rounds.get(node, 0)][node] += message_bytes(reply)
        return replies

    def totals(self) -> dict[str, Any]:
        """Per-round and total bytes, and per-node bytes of each round (JSON-ready)."""
        rounds = sorted(set(self.up) | set(self.down))
        return {
            "uplink_bytes": sum(sum(v.values()) for v in self.up.values()),
            "downlink_bytes": sum(sum(v.values()) for v in self.down.values()),
            "uplink_bytes_per_round": [sum(self.up[r].values()) for r in rounds],
            "downlink_bytes_per_round": [sum(self.down[r].values()) for r in rounds],
            "bytes_per_client": {str(r): {str(n): {"up": self.up[r].get(n, 0), "down": self.down[r].get(n, 0)}
                                          for n in sorted(set(self.up[r]) | set(self.down[r]))} for r in rounds},
        }
