"""Small dataset files in the built-ins' real on-disk formats, for runs that must not download anything.

Used by the tests and by the shipped-config acceptance run (``benchmarks/acceptance.py``).

MNIST: torchvision's ``MNIST/raw`` idx files. CIFAR-10: torchvision's ``cifar-10-batches-py`` folder (pickled ``data_batch_1..5``, ``test_batch``,
``batches.meta``). ImageNet16: the pickled ``train_data_batch_1..10`` and ``val_data`` of
"Downsampled ImageNet 16x16". Pixels are random except where a test marks them.
"""
from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path
from typing import Any, Sequence

import numpy as np

CIFAR10_FOLDER = "cifar-10-batches-py"


def write_pickle(path: Path, obj: Any) -> None:
    """``obj`` pickled into ``path``, its folder created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def cifar10_batch(ids: Sequence[int], rng: np.random.Generator) -> dict[str, Any]:
    """One pickled batch: random pixels, the first red pixel the sample id, label id % 10."""
    data = rng.integers(0, 256, (len(ids), 3072), dtype=np.uint8)
    data[:, 0] = np.asarray(ids) % 256
    return {"batch_label": "fake", "data": data, "labels": [i % 10 for i in ids],
            "filenames": [f"{i}.png" for i in ids]}


def write_cifar10(root: Path, per_batch: int, test_ids: Sequence[int], seed: int = 0) -> dict[str, str]:
    """``root/cifar-10-batches-py`` with 5 training batches (ids 0 .. 5 * per_batch - 1) and a test
    batch; returns each file's MD5 (torchvision checks the official ones, which fakes cannot match)."""
    folder = root / CIFAR10_FOLDER
    rng = np.random.default_rng(seed)
    for k in range(5):
        write_pickle(folder / f"data_batch_{k + 1}", cifar10_batch(range(per_batch * k, per_batch * (k + 1)), rng))
    write_pickle(folder / "test_batch", cifar10_batch(test_ids, rng))
    write_pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)],
                                           "num_cases_per_batch": per_batch, "num_vis": 3072})
    return {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in folder.iterdir()}


def imagenet16_batch(ids: Sequence[int], labels: Sequence[int]) -> dict[str, Any]:
    """Rows: red plane = sample id, green plane = pixel position (row-major), blue = 9."""
    n = len(ids)
    red = np.repeat((np.asarray(ids) % 256).astype(np.uint8)[:, None], 256, axis=1)
    green = np.tile(np.arange(256, dtype=np.uint8), (n, 1))
    blue = np.full((n, 256), 9, dtype=np.uint8)
    return {"data": np.concatenate([red, green, blue], axis=1), "labels": list(labels)}


def write_imagenet16(root: Path, per_batch: int, val_ids: Sequence[int], num_classes: int = 200) -> None:
    """10 training batches (ids 0 .. 10 * per_batch - 1, 1-based labels 1 + 37 * id % num_classes)
    and ``val_data`` (labels 1 + 53 * id % num_classes)."""
    for k in range(10):
        ids = range(per_batch * k, per_batch * (k + 1))
        write_pickle(root / f"train_data_batch_{k + 1}", imagenet16_batch(ids, [1 + (37 * i) % num_classes for i in ids]))
    write_pickle(root / "val_data", imagenet16_batch(val_ids, [1 + (53 * i) % num_classes for i in val_ids]))


def write_idx(path: Path, array: np.ndarray) -> None:
    """MNIST idx: big-endian magic (0x0800 | ndim for uint8), the dims, then the raw bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, train: int, test: int, test_fill: int | None = None, seed: int = 0) -> None:
    """``root/MNIST/raw``: random digits (labels id % 10); ``test_fill``: every test pixel that value."""
    raw = root / "MNIST" / "raw"
    rng = np.random.default_rng(seed)
    for prefix, n, fill in (("train", train, None), ("t10k", test, test_fill)):
        images = rng.integers(0, 200, (n, 28, 28)) if fill is None else np.full((n, 28, 28), fill)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
