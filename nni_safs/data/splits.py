"""What every dataset builder shares: the split container, the missing-files error, and the
seeded train/val split of the training files.

Validation data always comes from the training files (never the official test split) so model
selection cannot leak test information; the split depends only on ``seed``, so a search and its
re-runs see identical indices.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, default_collate

from nni_safs.data.augment import Augmentation
from nni_safs.settings.dataset_files import DatasetNotFoundError, explain_missing, require_root

Transform = Callable[[Any], Any]
__all__ = ["DataSplits", "DatasetNotFoundError", "TensorImages", "Transform", "TransformSubset",
           "collate", "cross_validation_folds", "explain_missing", "require_root", "seeded_subset", "split_indices", "splits_from_files"]


@dataclass
class DataSplits:
    """Train (augmented), val (training files, no augmentation) and the official test split.

    ``train_plain`` and ``augmentation`` let the tensor path (:mod:`nni_safs.data.tensors`) hold
    the train images once and augment them per batch on the device; a builder that leaves
    ``train_plain`` unset keeps its splits on the DataLoader path.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int
    name: str
    train_plain: Dataset | None = None  # the train images without augmentation (same order as train)
    augmentation: Augmentation | None = None  # what train adds to train_plain; None: nothing


class TensorImages(Dataset):
    """In-memory images with plain ``int`` labels, matching what torchvision datasets yield."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def __getitems__(self, indices: Sequence[int]) -> TensorImages:
        """A DataLoader's whole batch in one indexing, handed on as it is by :func:`collate`.

        Fetching a batch of in-memory images one ``__getitem__`` at a time and stacking them
        costs a visible share of a small job; one indexing gives the very same tensors. As a dataset of ``(image, label)`` samples the
        batch still suits PyTorch's ``default_collate``, so a plain DataLoader keeps working.
        """
        index = torch.as_tensor(indices, dtype=torch.long)
        return TensorImages(self.images[index], self.labels[index])

    def __len__(self) -> int:
        return len(self.labels)


def collate(batch: Any) -> Any:
    """``default_collate``, but a batch fetched whole (:class:`TensorImages`) is passed through as
    ``(images, labels)``."""
    if isinstance(batch, TensorImages):
        return batch.images, batch.labels
    return default_collate(batch)


class TransformSubset(Dataset):
    """``Subset`` that applies its own image transform, so augmented train and plain val views
    can share one in-memory copy of the training files (ImageNet16 is ~4 GB per copy)."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], transform: Transform | None) -> None:
        self.dataset = dataset
        self.indices = indices
        self.transform = transform

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.dataset[self.indices[index]]
        return (self.transform(image) if self.transform is not None else image), label

    def __getitems__(self, indices: Sequence[int]) -> Sequence[tuple[Any, int]]:
        """Untransformed, a batch of the underlying dataset's own batched fetch (as ``Subset``)."""
        if self.transform is None and callable(getattr(self.dataset, "__getitems__", None)):
            return self.dataset.__getitems__([self.indices[i] for i in indices])
        return [self[i] for i in indices]

    def __len__(self) -> int:
        return len(self.indices)


def split_indices(n: int, seed: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """Disjoint (train, val) indices of ``range(n)``, a seeded shuffle so val is a random sample.

    ``val_fraction``: a share in [0, 1), or a whole number >= 1 of samples (the reference SAFS
    holds out 10,000 images).
    """
    whole = isinstance(val_fraction, int) and not isinstance(val_fraction, bool) and val_fraction >= 1
    if not (whole or 0.0 <= val_fraction < 1.0):
        raise ValueError(f"val_fraction must be in [0, 1) or a whole number of samples, got {val_fraction!r}")
    n_val = int(val_fraction) if whole else int(round(n * val_fraction))
    if n_val >= n:
        raise ValueError(f"val_fraction={val_fraction} of {n} samples leaves no training data")
    order = np.random.default_rng(seed).permutation(n).tolist()
    return order[n_val:], order[:n_val]


def cross_validation_folds(splits: DataSplits, folds: int, seed: int) -> list[DataSplits]:
    """The ``folds`` splits of k-fold cross-validation over the train split (the reference SAFS
    trains its dense and final models so, keeping the best fold).

    Fold ``i`` trains on the train split less its ``i``-th seeded share and validates on that
    share, unaugmented; the held-out val split that scores the search is never trained on.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"cross-validation needs folds >= 2, got {folds!r}")
    if splits.train_plain is None:
        raise ValueError(f"cv_folds: dataset {splits.name!r} has no unaugmented view of its training files "
                         "(train_plain) to validate a fold on; use cv_folds: 1")
    if len(splits.train) < folds:
        raise ValueError(f"cv_folds={folds} exceeds the {len(splits.train)} training samples")
    order = np.random.default_rng(seed).permutation(len(splits.train)).tolist()
    shares = [sorted(order[i::folds]) for i in range(folds)]
    out = []
    for i, held in enumerate(shares):
        keep = sorted(index for j, share in enumerate(shares) if j != i for index in share)
        out.append(dataclasses.replace(splits, train=Subset(splits.train, keep),
                                       train_plain=Subset(splits.train_plain, keep),
                                       val=Subset(splits.train_plain, held)))
    return out


def seeded_subset(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """A random ``fraction`` of ``dataset`` (at least one sample), fixed by ``seed``."""
    n = len(dataset)
    keep = max(1, int(round(n * fraction)))
    return Subset(dataset, sorted(np.random.default_rng(seed).permutation(n)[:keep].tolist()))


def splits_from_files(name: str, pool: Dataset, test: Dataset, *, seed: int, val_fraction: float,
                      train_transform: Transform | None, eval_transform: Transform | None,
                      num_classes: int, in_channels: int, image_size: int,
                      augmentation: Augmentation | None = None) -> DataSplits:
    """Split an untransformed training-file ``pool`` into augmented train and plain val views.

    The tensor path can hold the train view when it is the eval transform's view plus
    ``augmentation`` (given), or the very same transform (no augmentation); any other
    ``train_transform`` keeps the splits on the DataLoader path.
    """
    train_idx, val_idx = split_indices(len(pool), seed, val_fraction)
    train = TransformSubset(pool, train_idx, train_transform)
    if augmentation is not None:
        train_plain: Dataset | None = TransformSubset(pool, train_idx, eval_transform)
    else:
        train_plain = train if train_transform is eval_transform else None
    return DataSplits(
        train=train, val=TransformSubset(pool, val_idx, eval_transform),
        test=test, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
        name=name, train_plain=train_plain, augmentation=augmentation,
    )
