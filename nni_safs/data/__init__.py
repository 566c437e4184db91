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
from typing import TYPE_CHECKING, Any

from nni_safs.settings.catalog import DATASETS, DatasetFacts, register_dataset
from nni_safs.settings.dataset_files import DatasetNotFoundError, require_root

if TYPE_CHECKING:
    from nni_safs.data.splits import DataSplits


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
    from nni_safs.data.splits import seeded_subset

    builder = DATASETS.get(name)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    splits = builder(root=root, seed=seed, val_fraction=val_fraction, download=download, **options)
    if fraction < 1.0:  # the same seeded indices of train and its plain view
        plain = None if splits.train_plain is None else seeded_subset(splits.train_plain, fraction, seed)
        splits = dataclasses.replace(splits, train=seeded_subset(splits.train, fraction, seed), train_plain=plain)
    return splits


def list_datasets() -> list[str]:
    """Every registered dataset name."""
    return DATASETS.names()


__all__ = ["DATASETS", "DatasetFacts", "DataSplits", "DatasetNotFoundError", "build_dataset",
           "check_dataset_files", "list_datasets", "make_loaders", "register_dataset"]


_LAZY = {"DataSplits": ".splits", "seeded_subset": ".splits", "make_loaders": ".tensors"}  # they import torch


def __getattr__(name: str) -> Any:  # PEP 562
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
