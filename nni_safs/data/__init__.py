"""Dataset registry: ``build_dataset(name, root, seed, ...)`` returns seeded train/val/test splits.

A user adds a dataset with ``@register_dataset("name", files=[...], downloadable=...)`` on a
builder ``(root, seed, val_fraction, download, **options) -> DataSplits``; val must come from
the training files and test from the official test split, so search never selects on test
data. The files registered with it are checked under ``data_root`` before any trial runs.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..registry import Registry
from .files import (CIFAR10_FILES, IMAGENET16_TRAIN_FILES, IMAGENET16_VAL_FILE, MNIST_FILES, DatasetNotFoundError,
                    require_root)

if TYPE_CHECKING:
    from .splits import DataSplits

DATASETS: Registry = Registry("dataset")


@dataclass(frozen=True)
class DatasetFacts:
    files: tuple[str, ...]  # paths under data_root the builder reads (checked before any trial runs)
    downloadable: bool  # ``download: true`` fetches them (torchvision's datasets)


def register_dataset(name: str, *, files: Sequence[str] = (), downloadable: bool = False,
                     overwrite: bool = False) -> Callable:
    """Decorator registering a builder (or its ``"module:function"``, imported when first built)
    with the files it reads under ``data_root`` (none: it needs no root, or checks for itself)
    and whether it can download them."""
    return DATASETS.register(name, overwrite=overwrite, facts=DatasetFacts(tuple(files), downloadable))


def check_dataset_files(name: str, root: str | os.PathLike[str] | None, download: bool = False) -> None:
    """Fail fast (before any trial runs) when ``root`` lacks the files registered with the dataset;
    a downloadable dataset with ``download=True`` fetches them itself."""
    facts: DatasetFacts = DATASETS.facts(name)
    if not facts.files or (facts.downloadable and download):
        return
    path = require_root(root, name)
    missing = [f for f in facts.files if not os.path.isfile(os.path.join(path, f))]
    if missing:
        how = ("set `download: true` to fetch them there" if facts.downloadable else
               "see the dataset's documentation for where to get them")
        raise DatasetNotFoundError(f"data_root {path!r} does not hold the {name} files: missing "
                                   f"{', '.join(missing)}; {how}")


def build_dataset(name: str, root: str | os.PathLike[str] | None = None, seed: int = 0,
                  val_fraction: float = 0.1, download: bool = False, fraction: float = 1.0,
                  **options: Any) -> DataSplits:
    """Build ``name``; ``fraction`` < 1 keeps a seeded subset of train only, for cheap searches
    (val and test stay whole so scores remain comparable across budgets)."""
    from .splits import seeded_subset

    builder = DATASETS.get(name)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    splits = builder(root=root, seed=seed, val_fraction=val_fraction, download=download, **options)
    if fraction < 1.0:  # the same seeded indices of train and its plain view
        plain = None if splits.train_plain is None else seeded_subset(splits.train_plain, fraction, seed)
        splits = dataclasses.replace(splits, train=seeded_subset(splits.train, fraction, seed), train_plain=plain)
    return splits


def list_datasets() -> list[str]:
    return DATASETS.names()


__all__ = ["DATASETS", "DatasetFacts", "DataSplits", "DatasetNotFoundError", "build_dataset",
           "check_dataset_files", "list_datasets", "make_loaders", "register_dataset"]

# the built-ins and their files; each builder's module (and torch) is imported when it is first built
register_dataset("mnist5k")("nni_safs.data.mnist5k:mnist5k")
register_dataset("synthetic")("nni_safs.data.synthetic:synthetic")
register_dataset("mnist", files=MNIST_FILES, downloadable=True)("nni_safs.data.vision:mnist")
register_dataset("cifar10", files=CIFAR10_FILES, downloadable=True)("nni_safs.data.vision:cifar10")
register_dataset("imagenet16",
                 files=[*IMAGENET16_TRAIN_FILES, IMAGENET16_VAL_FILE])("nni_safs.data.imagenet16:imagenet16")

_LAZY = {"DataSplits": ".splits", "seeded_subset": ".splits", "make_loaders": ".tensors"}  # they import torch


def __getattr__(name: str) -> Any:  # PEP 562
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
