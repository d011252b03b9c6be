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
