"""Random but learnable images for smoke tests: each class is a fixed random pattern plus noise.

Everything (patterns, noise, splits) follows ``seed``, so runs are reproducible without any files.
"""
from __future__ import annotations

import math
import os

import torch

from nni_safs.data.splits import DataSplits, TensorImages, splits_from_files

TEST_SHARE = 1 / 6  # of ``size``: 1200 samples -> 200 test, and with val_fraction=0.1, 900/100


def _samples(patterns: torch.Tensor, n: int, generator: torch.Generator) -> TensorImages:
    """``n`` images: a random class's pattern plus equal-variance noise, scaled to unit variance."""
    labels = torch.randint(len(patterns), (n,), generator=generator)
    noise = torch.randn((n, *patterns.shape[1:]), generator=generator)
    return TensorImages((patterns[labels] + noise) / math.sqrt(2.0), labels)


def synthetic(root: str | os.PathLike[str] | None, seed: int, val_fraction: float, download: bool,
              num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
              size: int = 1200) -> DataSplits:
    """``size`` samples in all; ``root`` and ``download`` are ignored."""
    n_test = int(round(size * TEST_SHARE))
    if num_classes < 1 or not 1 <= n_test < size:
        raise ValueError(f"synthetic needs num_classes >= 1 and size >= 4, got "
                         f"num_classes={num_classes}, size={size}")
    generator = torch.Generator().manual_seed(seed)
    patterns = torch.randn((num_classes, in_channels, image_size, image_size), generator=generator)
    pool, test = _samples(patterns, size - n_test, generator), _samples(patterns, n_test, generator)
    return splits_from_files("synthetic", pool, test, seed=seed, val_fraction=val_fraction,
                             train_transform=None, eval_transform=None, num_classes=num_classes,
                             in_channels=in_channels, image_size=image_size)
