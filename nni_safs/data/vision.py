"""torchvision's MNIST and CIFAR-10, with val carved from the training files.

Each training file set is loaded once, untransformed; train and val are index views over it
with their own transforms (augmentation on train only). torchvision is imported when a dataset
is built, not with this module: importing it loads its models and ``torch._dynamo`` (about a
second), which a trial on the embedded digits never needs.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from nni_safs.data.augment import Augmentation, PadCropFlip
from nni_safs.data.splits import DataSplits, splits_from_files
from nni_safs.settings.dataset_files import CIFAR10_FILES, CIFAR10_FOLDER, MNIST_FILES, explain_missing, require_root

if TYPE_CHECKING:
    from torchvision import transforms

__all__ = ["CIFAR10_AUGMENT", "CIFAR10_FILES", "CIFAR10_MEAN", "CIFAR10_STD", "MNIST_FILES", "MNIST_MEAN", "MNIST_STD",
           "NORMALIZATIONS", "check_option", "cifar10", "image_transforms", "mnist"]
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR10_AUGMENT = PadCropFlip(32, 4, CIFAR10_MEAN, CIFAR10_STD)
# ``dataset_options: {normalization: ...}``: ``standard`` (the statistics above) or ``reference``,
# the reference SAFS's: MNIST not normalized at all, CIFAR-10 with the widely copied std below
NORMALIZATIONS = {"mnist": {"standard": (MNIST_MEAN, MNIST_STD), "reference": ((0.0,), (1.0,))},
                  "cifar10": {"standard": (CIFAR10_MEAN, CIFAR10_STD),
                              "reference": (CIFAR10_MEAN, (0.2023, 0.1994, 0.2010))}}


def check_option(what: str, value: Any, valid) -> None:
    """Reject a ``dataset_options`` value that is not one of ``valid``, naming them."""
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


def image_transforms(mean: tuple[float, ...], std: tuple[float, ...], augmentation: Augmentation | None = None
                     ) -> tuple["transforms.Compose", "transforms.Compose"]:
    """(train, eval) transforms; train adds ``augmentation`` before normalizing, else it is eval itself."""
    from torchvision import transforms
    plain = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if augmentation is None:
        same = transforms.Compose(plain)
        return same, same
    return transforms.Compose(augmentation.torchvision() + plain), transforms.Compose(plain)


def _urls(cls: Any) -> list[str]:
    """Where a torchvision dataset class downloads its files from (its first mirror)."""
    if hasattr(cls, "resources") and hasattr(cls, "mirrors"):  # MNIST
        return [f"{cls.mirrors[0]}{file}" for file, _ in cls.resources]
    return [cls.url]  # CIFAR-10


def _load(name: str, cls: Any, folder: str, root: str | os.PathLike[str] | None, download: bool,
          eval_transform: "transforms.Compose") -> tuple[Any, Any]:
    """(untransformed training pool, transformed official test split) of a torchvision class
    that keeps its files in ``root/folder``."""
    path = require_root(root, name)
    with explain_missing(name, path, folder, _urls(cls) if download else ()):
        pool = cls(path, train=True, download=download)
        test = cls(path, train=False, transform=eval_transform, download=False)
    return pool, test


def mnist(root: str | os.PathLike[str] | None, seed: int, val_fraction: float,
          download: bool, normalization: str = "standard") -> DataSplits:
    """torchvision's MNIST under ``root``: validation drawn from its training files, its official test split."""
    from torchvision import datasets
    check_option("mnist normalization", normalization, NORMALIZATIONS["mnist"])
    train_tf, eval_tf = image_transforms(*NORMALIZATIONS["mnist"][normalization])
    pool, test = _load("mnist", datasets.MNIST, os.path.join("MNIST", "raw"), root, download, eval_tf)
    return splits_from_files("mnist", pool, test, seed=seed, val_fraction=val_fraction,
                             train_transform=train_tf, eval_transform=eval_tf,
                             num_classes=10, in_channels=1, image_size=28)


def cifar10(root: str | os.PathLike[str] | None, seed: int, val_fraction: float,
            download: bool, normalization: str = "standard") -> DataSplits:
    """torchvision's CIFAR-10 under ``root``: validation drawn from its training files, its official test split."""
    from torchvision import datasets
    check_option("cifar10 normalization", normalization, NORMALIZATIONS["cifar10"])
    mean, std = NORMALIZATIONS["cifar10"][normalization]
    augment = CIFAR10_AUGMENT if normalization == "standard" else PadCropFlip(32, 4, mean, std)
    train_tf, eval_tf = image_transforms(mean, std, augment)
    pool, test = _load("cifar10", datasets.CIFAR10, CIFAR10_FOLDER, root, download, eval_tf)
    return splits_from_files("cifar10", pool, test, seed=seed, val_fraction=val_fraction,
                             train_transform=train_tf, eval_transform=eval_tf,
                             num_classes=10, in_channels=3, image_size=32, augmentation=augment)
