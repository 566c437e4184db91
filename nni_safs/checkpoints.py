"""Checkpoints that remember what produced them, written atomically.

A checkpoint is ``{"meta": {...}, "state": {...}, **extra}`` saved with ``torch.save``. The
metadata (model, dataset, seed, ratio, scope, ...) is compared on load, so a workspace
prepared with other settings is refused instead of silently reused.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch


class CheckpointMismatchError(ValueError):
    """The checkpoint on disk was produced by other settings than the ones requested."""


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, then rename it into place.

    A crash mid-write leaves the old file (or none), never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, state: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
                    **extra: Any) -> None:
    payload = {"meta": dict(meta), "state": dict(state), **extra}
    atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | Path, expect: Mapping[str, Any] | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint; every key of ``expect`` must equal the stored metadata."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if expect:
        stored = payload.get("meta", {})
        diffs = [f"{key}: requested {value!r}, checkpoint has {stored.get(key, '<missing>')!r}"
                 for key, value in expect.items() if stored.get(key) != value]
        if diffs:
            raise CheckpointMismatchError(
                f"checkpoint {str(path)!r} was made with other settings ({'; '.join(diffs)}); "
                "use another workspace or delete it to recompute")
    return payload
