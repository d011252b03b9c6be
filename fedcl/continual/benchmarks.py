"""Avalanche benchmarks built from fedcl datasets with Avalanche 0.6's current generators.

Split benchmarks come from ``class_incremental_benchmark``, permuted ones from
``benchmark_from_datasets`` (not the ``deprecated`` package's ``nc_benchmark``); both are
decorated with task labels (one task, 0) and a classes timeline, so experiences expose
``task_labels``, ``classes_in_this_experience`` and ``classes_seen_so_far`` as before.

Every benchmark is a registered function ``fn(data_root, seed, n_experiences) -> Benchmark``;
the class order (split benchmarks) or the permutations (permuted) are fixed by ``seed``.
Missing files raise :class:`~fedcl.errors.DataError` before anything trains.

Every training example carries its index in the source dataset's training tensors as the
Avalanche data attribute :data:`RECORD_IDS` (``exp.dataset.record_ids``), so a DP memory
knows which records each experience's release reads (:attr:`Benchmark.records_domain`
names them): split benchmarks hold disjoint records, permuted ones the same records in
every experience.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from avalanche.benchmarks.scenarios import benchmark_from_datasets, class_incremental_benchmark, with_task_labels
from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
from avalanche.benchmarks.utils import DataAttribute, TaskLabels
from avalanche.benchmarks.utils.classification_dataset import ClassificationDataset
from torch.utils.data import Dataset

from fedcl.data import ImageData, load_dataset
from fedcl.errors import ConfigError
from fedcl.registry import Registry

__all__ = ["BENCHMARKS", "RECORD_IDS", "Benchmark", "list_benchmarks", "make_benchmark", "register_benchmark",
           "tensor_dataset"]


#: the data attribute holding each training example's index in the source dataset's training tensors
RECORD_IDS = "record_ids"


@dataclass
class Benchmark:
    """An Avalanche scenario plus the fedcl facts strategies need.

    Attributes:
        scenario: the Avalanche benchmark (``train_stream``, ``test_stream``).
        data: the source dataset (normalisation, class names).
        name: registry name.
        num_classes: classes of the whole stream (the model's output size).
        meta: facts for distillation engines (``dataset``, ``mean``, ``std``).
    """

    scenario: Any
    data: ImageData
    name: str
    num_classes: int

    @property
    def meta(self) -> dict[str, Any]:
        return {"dataset": self.data.name, "mean": list(self.data.mean), "std": list(self.data.std)}

    @property
    def records_domain(self) -> str:
        """What the :data:`RECORD_IDS` of the training stream index: the source dataset's training split."""
        return f"{self.data.name}/train"

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return self.data.image_shape


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")
Factory = Callable[[str | None, int, int | None], Benchmark]


def register_benchmark(name: str) -> Callable[[Factory], Factory]:
    """Register ``fn(root, seed, n_experiences, **options) -> Benchmark`` under ``name``.

    ``options`` are the data options that are set (``image_size``, ``val_fraction``) and, only when
    the validation split is asked for, ``split="val"`` (the test stream is then that split).
    """
    return BENCHMARKS.register(name)


def list_benchmarks() -> list[str]:
    """Names of every registered benchmark."""
    return BENCHMARKS.names()


def make_benchmark(name: str, *, root: str | None = None, seed: int = 0, n_experiences: int | None = None,
                   eval_split: str = "test", **data_options: Any) -> Benchmark:
    """Build a registered benchmark (``split_digits``, ``split_mnist``, ``split_fashion_mnist``,
    ``split_cifar10_jpeg``, ``split_imagefolder`` with ``root`` the folder, ``permuted_mnist`` ...).

    ``data_options`` (``image_size``, ``val_fraction``) go to :func:`fedcl.data.load_dataset`;
    ``eval_split="val"`` makes the validation split (``val_fraction`` of the training data, which the
    training stream then lacks) the test stream, to choose settings without reading the test set.

    Raises:
        ConfigError: unknown name, or classes that do not split into ``n_experiences`` equal experiences.
        DataError: the dataset files are missing under ``root`` (or, for ``split_imagefolder``, a bad folder).
    """
    from fedcl.data.split import check_eval_split

    check_eval_split(eval_split, data_options.get("val_fraction") or 0.0)
    options = {k: v for k, v in data_options.items() if v}  # only what is set: other factories take none
    if eval_split != "test":
        options["split"] = eval_split
    return BENCHMARKS.get(name)(root, seed, n_experiences, **options)


class _Tensors(Dataset):
    """``(image, int label)`` pairs: Avalanche's targets are ints, as its own tensor datasets return them."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def tensor_dataset(x: torch.Tensor, y: torch.Tensor, task_labels: int | list[int] = 0,
                   record_ids: list[int] | None = None) -> ClassificationDataset:
    """An Avalanche classification dataset of images ``x`` and labels ``y`` whose items are ``(x, y, task)``.

    Args:
        x: images, one per row.
        y: int class labels (the ``targets`` data attribute).
        task_labels: one task label for all, or one per example (``targets_task_labels``, appended to items).
        record_ids: when given, the :data:`RECORD_IDS` data attribute (each example's source index).
    """
    tasks = [task_labels] * len(y) if isinstance(task_labels, int) else list(task_labels)
    attributes = [DataAttribute(y.tolist(), "targets"), TaskLabels(tasks)]
    if record_ids is not None:
        # subsets and concatenations carry data attributes along, so every experience knows its source indices
        attributes.append(DataAttribute(list(record_ids), RECORD_IDS))
    return ClassificationDataset([_Tensors(x, y)], data_attributes=attributes)


def _train_test(x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor) -> dict[str, Any]:
    return {"train": tensor_dataset(x, y, record_ids=list(range(len(y)))), "test": tensor_dataset(xt, yt)}


def _permute(images: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    return images.flatten(1)[:, perm].view_as(images)


def _split(dataset: str, name: str, default_exps: int) -> Factory:
    def build(root: str | None, seed: int, n_experiences: int | None, split: str = "test",
              **options: Any) -> Benchmark:
        data = load_dataset(dataset, root, **options).for_evaluation(split)
        n = n_experiences or default_exps
        if n < 1 or data.num_classes % n:
            raise ConfigError(f"{name}: {data.num_classes} classes cannot be split into {n} experiences of equal "
                              f"size; set n_experiences to a divisor of {data.num_classes}")
        # seed: the same class order nc_benchmark drew (torch.manual_seed(seed), then randperm)
        scenario = with_task_labels(class_incremental_benchmark(
            _train_test(data.train_images, data.train_labels, data.test_images, data.test_labels),
            num_experiences=n, seed=seed))
        return Benchmark(scenario, data, name, data.num_classes)

    build.__doc__ = f"Class-incremental {dataset}: classes in a seeded random order, {default_exps} experiences."
    return build


def _permuted(dataset: str, name: str, default_exps: int) -> Factory:
    def build(root: str | None, seed: int, n_experiences: int | None, split: str = "test",
              **options: Any) -> Benchmark:
        data = load_dataset(dataset, root, **options).for_evaluation(split)
        gen = torch.Generator().manual_seed(seed)
        n_pix = int(torch.tensor(data.image_shape).prod())
        train, test = [], []
        for i in range(n_experiences or default_exps):
            # the first experience sees the original images, as in Avalanche's PermutedMNIST
            perm = torch.arange(n_pix) if i == 0 else torch.randperm(n_pix, generator=gen)
            # every experience holds the same training records, permuted: their DP releases compose sequentially
            sets = _train_test(_permute(data.train_images, perm), data.train_labels,
                               _permute(data.test_images, perm), data.test_labels)
            train.append(sets["train"])
            test.append(sets["test"])
        scenario = with_classes_timeline(with_task_labels(benchmark_from_datasets(train=train, test=test)))
        return Benchmark(scenario, data, name, data.num_classes)

    build.__doc__ = f"Domain-incremental {dataset}: each experience a seeded pixel permutation of all classes."
    return build


# split_imagefolder reads data.root=DIR (train/<class>/*, test/<class>/*); split_cifar10_jpeg reads
# <data root>/CIFAR10-JPEG (../shared/data): 5 experiences of 2 classes, class-incremental
for _name, _ds, _exps in (("split_digits", "digits", 5), ("split_mnist", "mnist", 5),
                          ("split_fashion_mnist", "fashion_mnist", 5), ("split_cifar10", "cifar10", 5),
                          ("split_imagefolder", "imagefolder", 5), ("split_cifar10_jpeg", "cifar10_jpeg", 5)):
    register_benchmark(_name)(_split(_ds, _name, _exps))
for _name, _ds in (("permuted_digits", "digits"), ("permuted_mnist", "mnist")):
    register_benchmark(_name)(_permuted(_ds, _name, 5))
