"""ClientApps of the simulation tests that corrupt their summaries, as buggy or malicious clients would.

Each app is fedcl's ClientApp whose reply is then corrupted for some partitions (``nan``,
``shape``, ``labels``, ``oversize``, ``dtype``; float32 codec). The tests name them as
``tests/federated_faults.py:ATTRIBUTE``: the file ships in the simulation's Flower app, so
nothing of this reaches fedcl's ClientApp or its run config.
"""

from __future__ import annotations

import torch
from flwr.app import Array, Context, Message
from flwr.clientapp import ClientApp

__all__ = ["FIVE_FAULTS", "TWO_FAULTS", "faulty_client_app", "five_faults", "two_faults"]

#: partition id -> how its summary is corrupted
FIVE_FAULTS = {0: "nan", 1: "shape", 2: "labels", 3: "oversize", 4: "dtype"}
TWO_FAULTS = {0: "nan", 1: "labels"}


def faulty_client_app(faults: dict[int, str]) -> ClientApp:
    """fedcl's ClientApp, except that partition ``p`` corrupts its summary the way ``faults[p]`` says."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        from fedcl.federated.client_app import train as fedcl_train
        from fedcl.federated.codec import decode_summary, encode_summary

        reply = fedcl_train(msg, context)
        kind = faults.get(int(context.node_config["partition-id"]))
        if not kind:
            return reply
        x, y = decode_summary(reply.content["summary"], "float32")
        if kind == "nan":
            x[0] = float("nan")
        elif kind == "shape":
            x = torch.nn.functional.pad(x, (0, 1, 0, 1))
        elif kind == "labels":
            y[0] = 10 + 3
        elif kind == "oversize":
            x, y = x.repeat(50, 1, 1, 1), y.repeat(50)
        record = encode_summary(x, y, "float32")
        if kind == "dtype":
            record["images"] = Array(x.double().numpy())
        reply.content["summary"] = record
        return reply

    return app


five_faults = faulty_client_app(FIVE_FAULTS)
two_faults = faulty_client_app(TWO_FAULTS)
