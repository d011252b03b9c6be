"""SummaryStrategy bookkeeping that needs no simulation."""

import pytest

from fedcl.errors import SummaryRejected
from fedcl.federated.validate import SummarySpec
from strategies.summaries import OneShotSummaries


def test_nodes_that_never_reply_count_as_dropped():
    strategy = OneShotSummaries(lambda *a: None, SummarySpec((1, 8, 8), 10, 100, 10**6), min_summaries=1)
    strategy._asked = {3, 7}  # what configure_train records
    with pytest.raises(SummaryRejected, match="no reply within the round timeout"):
        strategy.aggregate_train(1, [])
    assert [(d["node"], d["round"]) for d in strategy.dropped] == [(3, 1), (7, 1)]


def test_the_privacy_table_takes_each_clients_latest_ledger_and_counts_its_refusals():
    from fedcl.federated.server_app import privacy_table

    big = 2**64 - 5  # Flower node ids are unsigned 64-bit
    summaries = {11: [{"round": 1, "partition-id": 0, "epsilon": 0.99, "releases": 1, "budget": 1.2}],
                 big: [{"round": 1, "partition-id": 1, "epsilon": 0.98, "releases": 1, "budget": 1.2},
                       {"round": 2, "partition-id": 1, "epsilon": 1.19, "releases": 2, "budget": 1.2}]}
    refused = [{"round": r, "node": 11, "reason": "privacy budget exceeded",
                "metrics": {"partition-id": 0, "epsilon": 0.99, "releases": 1, "budget": 1.2}} for r in (2, 3)]
    assert privacy_table(summaries, refused) == {
        "0": {"epsilon": 0.99, "releases": 1, "budget": 1.2, "refused": 2},
        "1": {"epsilon": 1.19, "releases": 2, "budget": 1.2, "refused": 0}}
    no_cap = {11: [{"round": 1, "partition-id": 0, "epsilon": 3.0, "releases": 3, "budget": 0.0}]}
    assert privacy_table(no_cap, [])["0"]["budget"] is None
    assert privacy_table({11: [{"round": 1, "partition-id": 0, "epsilon": 0.0, "releases": 0}]}, []) == {}  # no DP
