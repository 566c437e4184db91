"""What a dataset's files are and where they go: the built-ins' file lists, the missing-files
error and the root check. Free of torch, so checking a run's settings does not import it."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Sequence

MNIST_FILES = tuple(os.path.join("MNIST", "raw", f) for f in (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = tuple(os.path.join(CIFAR10_FOLDER, f) for f in [*(f"data_batch_{i}" for i in range(1, 6)),
                                                                   "test_batch"])
IMAGENET16_TRAIN_FILES = tuple(f"train_data_batch_{i}" for i in range(1, 11))
IMAGENET16_VAL_FILE = "val_data"


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not where the caller said; the message says what to put there."""


def require_root(root: str | os.PathLike[str] | None, name: str) -> str:
    """File-backed datasets have no sensible default location, so insist on one."""
    if root is None:
        raise ValueError(f"dataset {name!r} needs a root directory (root=... / `data_root:` in the config)")
    return os.path.expanduser(os.fspath(root))


@contextmanager
def explain_missing(name: str, root: str, folder: str, urls: Sequence[str] = ()) -> Iterator[None]:
    """Turn torchvision's bare "Dataset not found" RuntimeError, and a download that failed
    (``urls``: where the files come from), into an actionable error; ``folder`` is where under
    ``root`` the dataset's class looks for its files."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        if urls and (isinstance(err, OSError) or "download" in str(err).lower()):
            raise DatasetNotFoundError(
                f"downloading {name} failed ({type(err).__name__}: {err}). Its files come from "
                f"{', '.join(urls)}; fetch them by hand and put them in {os.path.join(root, folder)!r} "
                "(then the run needs no download)") from err
        if isinstance(err, OSError) or "not found" not in str(err):
            raise
        raise DatasetNotFoundError(
            f"{name} files not found (or corrupted) in {os.path.join(root, folder)!r}. Pass "
            f"download=True (`download: true` in the config) to fetch them under root {root!r}, "
            f"or place the files there."
        ) from err
