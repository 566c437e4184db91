"""Downsampled ImageNet 16x16 (Chrabaszcz et al. 2017) and its 120-class subset ImageNet16-120.

The files are only distributed from image-net.org behind a registration, so there is no download;
the error for missing files says exactly what to fetch and where to put it.

The reference SAFS's input pipeline (``coustum_dataset.py``) is the default but for validation:
no random augmentation, the training set doubled by a mirrored copy (``augmentation:
mirrored_copy``); ``normalization: reference`` subtracts the per-pixel mean image stored in the
training files (no division); ``validation: val_data`` validates on the official val file, which
is then also the test split, as the reference does (the default holds out training images).
The reference's ``RandomResizedCrop`` and flip are dead code (its transform never reaches the
dataset); ``resized_crop`` and ``pad_crop_flip`` remain as options.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from nni_safs.data.augment import PadCropFlip, ResizedCrop
from nni_safs.data.splits import DataSplits, splits_from_files
from nni_safs.data.vision import check_option, image_transforms
from nni_safs.settings.dataset_files import IMAGENET16_TRAIN_FILES as TRAIN_FILES
from nni_safs.settings.dataset_files import IMAGENET16_VAL_FILE as VAL_FILE
from nni_safs.settings.dataset_files import DatasetNotFoundError, require_root

MAX_CLASSES = 1000
_PIXELS = 3 * 16 * 16
# Per-channel statistics of the 16x16 training images (as used by NAS-Bench-201).
IMAGENET16_MEAN = tuple(v / 255 for v in (122.68, 116.66, 104.01))
IMAGENET16_STD = tuple(v / 255 for v in (63.22, 61.26, 65.09))
AUGMENTATIONS = {"mirrored_copy": None,  # the reference's: each training image and its mirror, no random draw
                 "resized_crop": ResizedCrop(16),
                 "pad_crop_flip": PadCropFlip(16, 2, IMAGENET16_MEAN, IMAGENET16_STD)}  # as CIFAR-10's
NORMALIZATIONS = ("standard", "reference")  # per-channel mean and std | the reference's per-pixel mean image
VALIDATIONS = ("holdout", "val_data")  # val_fraction of the training files | the official val file (= test)


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
        self.file_mean = self._mean(files[0]) if train else None

    def mean_image(self) -> torch.Tensor:
        """The per-pixel mean training image (3, 16, 16) in [0, 1]: the one the files store (the
        reference subtracts the first batch's), else the mean of the images read."""
        mean = self.file_mean if self.file_mean is not None else \
            self.data.transpose(0, 3, 1, 2).reshape(len(self.data), _PIXELS).mean(0, dtype=np.float64)
        return torch.as_tensor(np.asarray(mean, dtype=np.float32).reshape(3, 16, 16) / 255)

    def _mean(self, name: str) -> np.ndarray | None:
        with open(os.path.join(self.root, name), "rb") as f:
            mean = pickle.load(f, encoding="latin1").get("mean")
        return None if mean is None else np.asarray(mean, dtype=np.float64).reshape(_PIXELS)

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


class SubtractImage:
    """``image - mean`` on a tensor: the reference's normalization (a per-pixel mean, no std)."""

    def __init__(self, mean: torch.Tensor) -> None:
        self.mean = mean

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image - self.mean


class MirroredCopy(Dataset):
    """``dataset`` followed by each of its images mirrored left-right (after its transform, as the
    reference mirrors its mean-subtracted arrays): twice the samples, no random draw."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[index % len(self.dataset)]
        return (torch.flip(image, dims=[-1]) if index >= len(self.dataset) else image), label

    def __len__(self) -> int:
        return 2 * len(self.dataset)


def imagenet16(root: str | os.PathLike[str] | None, seed: int, val_fraction: float,
               download: bool, num_classes: int = MAX_CLASSES, augmentation: str = "mirrored_copy",
               normalization: str = "standard", validation: str = "holdout") -> DataSplits:
    """Test is the official ``val_data``. ``download`` is accepted for a uniform signature but
    cannot fetch anything. ``dataset_options`` keys: ``augmentation`` (:data:`AUGMENTATIONS`),
    ``normalization`` (:data:`NORMALIZATIONS`; ``reference`` only with ``mirrored_copy``: a crop of
    a mean-subtracted image is not the mean-subtracted crop), ``validation`` (:data:`VALIDATIONS`;
    with ``val_data`` every training file trains and ``val_fraction`` does not apply)."""
    check_option("imagenet16 augmentation", augmentation, AUGMENTATIONS)
    check_option("imagenet16 normalization", normalization, NORMALIZATIONS)
    check_option("imagenet16 validation", validation, VALIDATIONS)
    augment = AUGMENTATIONS[augmentation]
    if normalization == "reference" and augment is not None:
        raise ValueError(f"imagenet16 normalization 'reference' needs augmentation 'mirrored_copy', got {augmentation!r}")
    path = require_root(root, "imagenet16")
    pool = ImageNet16(path, train=True, num_classes=num_classes)
    train_tf, eval_tf = image_transforms(IMAGENET16_MEAN, IMAGENET16_STD, augment)
    if normalization == "reference":
        from torchvision import transforms
        train_tf = eval_tf = transforms.Compose([transforms.ToTensor(), SubtractImage(pool.mean_image())])
    test = ImageNet16(path, train=False, transform=eval_tf, num_classes=num_classes)
    splits = splits_from_files("imagenet16", pool, test, seed=seed,
                               val_fraction=0 if validation == "val_data" else val_fraction,
                               train_transform=train_tf, eval_transform=eval_tf,
                               num_classes=num_classes, in_channels=3, image_size=16, augmentation=augment)
    if validation == "val_data":
        splits = dataclasses.replace(splits, val=test)
    if augment is None:
        mirrored = MirroredCopy(splits.train)
        splits = dataclasses.replace(splits, train=mirrored, train_plain=mirrored)
    return splits
