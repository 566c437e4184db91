"""Downsampled ImageNet 16x16 (Chrabaszcz et al. 2017) and its 120-class subset ImageNet16-120.

The files are only distributed from image-net.org behind a registration, so there is no download;
the error for missing files says exactly what to fetch and where to put it.
"""
from __future__ import annotations

import os
import pickle
from typing import Any, Callable

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from nni_safs.data.augment import PadCropFlip, ResizedCrop
from nni_safs.data.splits import DataSplits, splits_from_files
from nni_safs.data.vision import image_transforms
from nni_safs.settings.dataset_files import IMAGENET16_TRAIN_FILES as TRAIN_FILES
from nni_safs.settings.dataset_files import IMAGENET16_VAL_FILE as VAL_FILE
from nni_safs.settings.dataset_files import DatasetNotFoundError, require_root

MAX_CLASSES = 1000
_PIXELS = 3 * 16 * 16
# Per-channel statistics of the 16x16 training images (as used by NAS-Bench-201).
IMAGENET16_MEAN = tuple(v / 255 for v in (122.68, 116.66, 104.01))
IMAGENET16_STD = tuple(v / 255 for v in (63.22, 61.26, 65.09))
AUGMENTATIONS = {"resized_crop": ResizedCrop(16),  # the reference SAFS's RandomResizedCrop(16)
                 "pad_crop_flip": PadCropFlip(16, 2, IMAGENET16_MEAN, IMAGENET16_STD)}  # as CIFAR-10's


class ImageNet16(Dataset):
    """torchvision-style reader of the pickled batches; ``train=False`` reads the official val.

    Each file pickles ``{'data': uint8 (N, 3072) channel-major 3x16x16, 'labels': 1-based ints}``.
    ``num_classes=k`` keeps only labels ``<= k`` (k=120 gives ImageNet16-120); targets are 0-based.
    """

    def __init__(self, root: str | os.PathLike[str], train: bool = True,
                 transform: Callable | None = None, target_transform: Callable | None = None,
                 num_classes: int = MAX_CLASSES) -> None:
        self.root, self.transform, self.target_transform = os.fspath(root), transform, target_transform
        if not 1 <= num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes must be in 1..{MAX_CLASSES}, got {num_classes!r}")
        self.train = train
        self.num_classes = num_classes
        files = TRAIN_FILES if train else (VAL_FILE,)
        self._check_files(files)
        images, targets = [], []
        for name in files:
            data, labels = self._read(name)
            keep = labels <= num_classes
            images.append(data[keep])
            targets.append(labels[keep] - 1)
        self.data = np.concatenate(images).reshape(-1, 3, 16, 16).transpose(0, 2, 3, 1)  # HWC for PIL
        self.targets: list[int] = np.concatenate(targets).tolist()

    def _check_files(self, files: tuple[str, ...]) -> None:
        missing = [f for f in files if not os.path.isfile(os.path.join(self.root, f))]
        if missing:
            raise DatasetNotFoundError(
                f"imagenet16 files missing under {str(self.root)!r}: {', '.join(missing)}. Expected the "
                f"folder to hold {TRAIN_FILES[0]} .. {TRAIN_FILES[-1]} and {VAL_FILE}, the pickled "
                "batches of 'Downsampled ImageNet 16x16' (Chrabaszcz et al. 2017) from image-net.org "
                "(download page requires registration; unzip Imagenet16_train and Imagenet16_val "
                "into this one folder). They cannot be downloaded automatically."
            )

    def _read(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        with open(os.path.join(self.root, name), "rb") as f:
            batch = pickle.load(f, encoding="latin1")  # latin1: the originals may be Python 2 pickles
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch["labels"], dtype=np.int64)
        if data.shape != (len(labels), _PIXELS):
            raise ValueError(f"{name}: expected data of shape ({len(labels)}, {_PIXELS}), got {data.shape}")
        if len(labels) and (labels.min() < 1 or labels.max() > MAX_CLASSES):
            raise ValueError(f"{name}: labels must be 1-based in 1..{MAX_CLASSES}, "
                             f"got {labels.min()}..{labels.max()}")
        return data, labels

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image: Any = Image.fromarray(self.data[index])
        target: Any = self.targets[index]
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __len__(self) -> int:
        return len(self.targets)

    def __repr__(self) -> str:
        return (f"ImageNet16(root={self.root!r}, split={'train' if self.train else 'val'}, "
                f"classes={self.num_classes}, samples={len(self)})")


def imagenet16(root: str | os.PathLike[str] | None, seed: int, val_fraction: float,
               download: bool, num_classes: int = MAX_CLASSES, augmentation: str = "resized_crop") -> DataSplits:
    """Test is the official ``val_data``; our val is drawn from the train batches.
    ``download`` is accepted for a uniform signature but cannot fetch anything. ``augmentation``
    (a ``dataset_options`` key): one of :data:`AUGMENTATIONS`."""
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"unknown imagenet16 augmentation {augmentation!r}; valid: {', '.join(AUGMENTATIONS)}")
    augment = AUGMENTATIONS[augmentation]
    path = require_root(root, "imagenet16")
    train_tf, eval_tf = image_transforms(IMAGENET16_MEAN, IMAGENET16_STD, augment)
    pool = ImageNet16(path, train=True, num_classes=num_classes)
    test = ImageNet16(path, train=False, transform=eval_tf, num_classes=num_classes)
    return splits_from_files("imagenet16", pool, test, seed=seed, val_fraction=val_fraction,
                             train_transform=train_tf, eval_transform=eval_tf,
                             num_classes=num_classes, in_channels=3, image_size=16,
                             augmentation=augment)
