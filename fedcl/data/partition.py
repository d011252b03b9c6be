"""Seeded federated splits of a label vector: ``iid``, ``dirichlet`` (alpha) and ``shards`` (classes per client).

The splits are computed with flwr-datasets' partitioners (``IidPartitioner``,
``DirichletPartitioner``, ``PathologicalPartitioner``) over a tiny two-column table
(``label``, ``idx``), so fedcl's in-memory tensors and a Flower user's
``FederatedDataset`` get the same partitions for the same seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fedcl.errors import ConfigError
from fedcl.registry import Registry

__all__ = ["PARTITIONERS", "partition_indices"]

PARTITIONERS: Registry[Any] = Registry("partition scheme")


@PARTITIONERS.register("iid")
def _iid(num_partitions: int, seed: int, **_: Any) -> Any:
    from flwr_datasets.partitioner import IidPartitioner

    return IidPartitioner(num_partitions=num_partitions)


@PARTITIONERS.register("dirichlet")
def _dirichlet(num_partitions: int, seed: int, alpha: float = 0.5, min_partition_size: int = 0, **_: Any) -> Any:
    from flwr_datasets.partitioner import DirichletPartitioner

    return DirichletPartitioner(num_partitions=num_partitions, partition_by="label", alpha=alpha,
                                min_partition_size=min_partition_size, self_balancing=False, shuffle=True, seed=seed)


@PARTITIONERS.register("shards")
def _shards(num_partitions: int, seed: int, classes_per_client: int = 2, **_: Any) -> Any:
    from flwr_datasets.partitioner import PathologicalPartitioner

    return PathologicalPartitioner(num_partitions=num_partitions, partition_by="label",
                                   num_classes_per_partition=classes_per_client, class_assignment_mode="first-deterministic",
                                   shuffle=True, seed=seed)


def partition_indices(labels: Sequence[int] | np.ndarray, num_partitions: int, scheme: str = "iid", *, seed: int = 0,
                      alpha: float = 0.5, classes_per_client: int = 2, min_partition_size: int | None = None
                      ) -> list[np.ndarray]:
    """Split example indices into ``num_partitions`` disjoint, seeded parts.

    Args:
        labels: the class label of every example (e.g. ``data.train_labels``).
        num_partitions: number of clients.
        scheme: ``iid``, ``dirichlet`` or ``shards``.
        seed: the same seed gives the same split.
        alpha: Dirichlet concentration (smaller is more skewed); ``dirichlet`` only.
        classes_per_client: classes each client holds; ``shards`` only.
        min_partition_size: ``dirichlet`` re-draws (up to 10 times) until every client has
            at least this many examples; None tries ``min(10, N // (2 * num_partitions))``, then
            1, then 0 (many clients and a small alpha can leave a client empty: it then sends
            an empty summary).

    Returns:
        One sorted int64 index array per partition.

    Raises:
        ConfigError: unknown scheme, bad sizes, or a split flwr-datasets cannot draw.
    """
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    n = int(y.shape[0])
    if num_partitions < 1 or num_partitions > n:
        raise ConfigError(f"num_partitions must be in [1, {n}] for {n} examples, got {num_partitions}")
    if scheme == "dirichlet" and not alpha > 0:
        raise ConfigError(f"alpha must be > 0 for the dirichlet partition, got {alpha}")
    if min_partition_size is None:
        for size in (min(10, n // (2 * num_partitions)), 1, 0):
            try:
                return partition_indices(y, num_partitions, scheme, seed=seed, alpha=alpha,
                                         classes_per_client=classes_per_client, min_partition_size=size)
            except ConfigError:
                if size == 0:
                    raise
    make: Callable[..., Any] = PARTITIONERS.get(scheme)
    import datasets

    idx = np.arange(n, dtype=np.int64)
    if scheme == "iid":  # IidPartitioner splits in order: shuffle first so the split is seeded
        idx = np.random.default_rng(seed).permutation(n)
    table = datasets.Dataset.from_dict({"label": y[idx].tolist(), "idx": idx.tolist()})
    partitioner = make(num_partitions, seed, alpha=alpha, classes_per_client=classes_per_client,
                       min_partition_size=min_partition_size)
    partitioner.dataset = table
    try:
        parts = [np.sort(np.asarray(partitioner.load_partition(i)["idx"], dtype=np.int64))
                 for i in range(num_partitions)]
    except ValueError as exc:
        raise ConfigError(f"cannot draw a {scheme} split of {n} examples into {num_partitions} partitions: {exc}") from None
    return parts
