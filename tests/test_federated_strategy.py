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


def test_select_ratio_sets_aside_rough_summaries_of_a_class_a_smoother_client_also_sent():
    import torch

    from fedcl.federated.server_app import SERVER_DEFAULTS, STRATEGIES
    from fedcl.federated.task import TaskSettings

    gen = torch.Generator().manual_seed(0)
    stroke = torch.zeros(4, 1, 8, 8)
    stroke[:, :, 2:6, 3:5] = 1.0
    smooth, rough = stroke + 0.1 * torch.randn(stroke.shape, generator=gen), stroke + 2 * torch.randn(stroke.shape,
                                                                                                     generator=gen)
    spec = SummarySpec((1, 8, 8), 10, 100, 10**6)
    # node 5 sends a smooth class 0; node `big` a rough class 0 and the only (rough) class 1
    big = 2**64 - 5  # Flower node ids are unsigned 64-bit
    summaries = {5: (smooth, torch.zeros(4, dtype=torch.long)),
                 big: (torch.cat([rough, rough.flip(0)]), torch.tensor([0] * 4 + [1] * 4))}
    cfg = {**SERVER_DEFAULTS, "min-nodes": 2}
    strategy, _, _ = STRATEGIES.get("oneshot")(TaskSettings(server_select=2.0), cfg, spec, lambda *a: None)
    assert strategy.select_ratio == 2.0  # the ServerApp passes server_select on
    strategy.summaries = summaries
    images, labels, set_aside = strategy.training_set()
    assert set_aside == 4 and labels.tolist() == [0] * 4 + [1] * 4
    torch.testing.assert_close(images[:4], smooth)
    plain = OneShotSummaries(lambda *a: None, spec)
    plain.summaries = summaries
    assert plain.training_set()[2] == 0 and len(plain.training_set()[1]) == 12
