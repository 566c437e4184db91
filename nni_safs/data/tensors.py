"""The tensor path: a run's splits held as tensors on the training device, batches drawn there.

Why: VGG-16 trains a CIFAR-10 epoch on one modern GPU in about a second, while a PIL/DataLoader
pipeline decodes, crops and collates each of the 45,000 images on the CPU, so the GPU waits
most of the epoch. Here every split is read once (its plain, un-augmented view, through the
dataset's own eval transform), kept on the device, and each batch is indexed out of it and
augmented there by the dataset's :class:`~nni_safs.data.augment.Augmentation`.

``data_loader`` (a classArg) picks the path: ``auto`` takes the tensor path on CUDA when the
dataset allows it (its builder set ``train_plain``: MNIST, mnist5k, CIFAR-10, ImageNet16,
synthetic) and its float32 images fit in ``DEVICE_SHARE`` of the free device memory, the
DataLoader path otherwise (on the CPU the per-image pipeline costs little next to training).
Same seed, same
batches: the order and the augmentation draw from one generator seeded by the run.
"""
from __future__ import annotations

import functools
import math
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from nni_safs.data.augment import Augmentation
from nni_safs.data.splits import DataSplits, collate
from nni_safs.settings.config import DATA_LOADERS

DEVICE_SHARE = 0.5  # of the free device memory the held images may take; the rest is for training
_READ_BATCH = 1024


class TensorLoader:
    """Batches ``(images, labels)`` of tensors on one device, standing in for a DataLoader.

    Each iteration draws a new order (``shuffle``) and, per batch, ``augmentation`` from
    ``generator``, which must live on the tensors' device. The last batch may be smaller.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool = False,
                 augmentation: Augmentation | None = None, generator: torch.Generator | None = None) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle = batch_size, shuffle
        self.augmentation, self.generator = augmentation, generator

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = (torch.randperm(n, generator=self.generator, device=self.labels.device) if self.shuffle
                 else None)
        for start in range(0, n, self.batch_size):
            index = slice(start, start + self.batch_size) if order is None else order[start:start + self.batch_size]
            images = self.images[index]
            if self.augmentation is not None:
                images = self.augmentation(images, self.generator)
            yield images, self.labels[index]

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)


def make_loaders(splits: DataSplits, batch_size: int, num_workers: int = 0,
                 seed: int = 0) -> tuple[DataLoader, DataLoader, DataLoader]:
    """(train, val, test) loaders; the train order (and worker seeds) follow ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(splits.train, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                       generator=generator, collate_fn=collate)
    val, test = (DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
                 for ds in (splits.val, splits.test))
    return train, val, test


def held_bytes(splits: DataSplits) -> int:
    """Device memory the tensor path needs for the splits' images (float32) and labels."""
    samples = sum(len(ds) for ds in (splits.train_plain or splits.train, splits.val, splits.test))
    return samples * (4 * splits.in_channels * splits.image_size ** 2 + 8)


def resolve_data_loader(name: str, splits: DataSplits, device: torch.device) -> str:
    """``tensor`` or ``dataloader`` for the ``data_loader`` setting ``name`` (see the module doc)."""
    if name not in DATA_LOADERS:
        raise ValueError(f"unknown data_loader {name!r}; valid: {', '.join(DATA_LOADERS)}")
    if name == "tensor" and splits.train_plain is None:
        raise ValueError(f"data_loader 'tensor': dataset {splits.name!r} does not provide train_plain (its "
                         "train images without augmentation); use 'dataloader' or 'auto'")
    if name != "auto":
        return name
    if device.type != "cuda" or splits.train_plain is None:
        return "dataloader"
    free, _ = torch.cuda.mem_get_info(device)
    return "tensor" if held_bytes(splits) <= DEVICE_SHARE * free else "dataloader"


def build_loaders(splits: DataSplits, batch_size: int, seed: int, device: torch.device | str,
                  data_loader: str = "auto", num_workers: int = 0, keep: bool = True
                  ) -> tuple[TensorLoader | DataLoader, TensorLoader | DataLoader, TensorLoader | DataLoader]:
    """(train, val, test) batches of the path ``data_loader`` resolves to; train's order follows ``seed``.

    Args:
        keep: on the tensor path, hold the splits for later calls in this process (a run's own
            splits); False for splits used once (a cross-validation fold), freed with the loaders.
    """
    device = torch.device(device)
    if resolve_data_loader(data_loader, splits, device) == "dataloader":
        return make_loaders(splits, batch_size, num_workers, seed)
    read = hold if keep else hold.__wrapped__
    generator = torch.Generator(device=device).manual_seed(seed)
    train = TensorLoader(*read(splits.train_plain, device, num_workers), batch_size, shuffle=True,
                         augmentation=splits.augmentation, generator=generator)
    val, test = (TensorLoader(*read(ds, device, num_workers), batch_size) for ds in (splits.val, splits.test))
    return train, val, test


@functools.lru_cache(maxsize=6)  # two runs' splits (train, val, test), as workspace.load_data caches
def hold(dataset: Dataset, device: torch.device, num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (image, label) of ``dataset`` in two tensors on ``device``, read once per process.

    Read in batches through a DataLoader (``num_workers`` processes) into tensors allocated
    on the device up front, so the device never holds two copies.
    """
    images = labels = None
    filled = 0
    reader = DataLoader(dataset, batch_size=_READ_BATCH, num_workers=num_workers, collate_fn=collate,
                        generator=torch.Generator())  # leaves the global RNG alone, cached or not
    for batch_images, batch_labels in reader:
        if images is None:
            images = torch.empty((len(dataset), *batch_images.shape[1:]), dtype=batch_images.dtype, device=device)
            labels = torch.empty(len(dataset), dtype=torch.long, device=device)
        images[filled:filled + len(batch_labels)] = batch_images
        labels[filled:filled + len(batch_labels)] = batch_labels
        filled += len(batch_labels)
    if images is None:
        raise ValueError(f"cannot hold an empty dataset ({dataset!r})")
    return images, labels
