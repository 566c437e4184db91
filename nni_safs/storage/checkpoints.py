"""Checkpoints that remember what produced them, written atomically.

A checkpoint is ``{"meta": {...}, "state": {...}, "checksum": ..., **extra}`` saved with
``torch.save``. The metadata (model, dataset, seed, ratio, scope, ...) is compared on load, so
a workspace prepared with other settings is refused instead of silently reused; the checksum
(SHA-256 of the state's tensors) is verified on load, so a truncated or damaged file is refused
by name instead of being read as a model.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

import torch

from nni_safs.storage.atomic import atomic_write


class CheckpointMismatchError(ValueError):
    """The checkpoint on disk was produced by other settings than the ones requested."""


class CorruptCheckpointError(ValueError):
    """The checkpoint file cannot be read back as written (truncated, damaged)."""


def save_checkpoint(path: str | Path, state: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
                    **extra: Any) -> None:
    """Write a checkpoint whole or not at all: the state, its checksum and the metadata that produced it."""
    payload = {"meta": dict(meta), "state": dict(state), "checksum": state_checksum(state), **extra}
    atomic_write(path, lambda handle: torch.save(payload, handle))


def state_checksum(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of a state dict's tensors."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        shape = tensor.shape
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def load_checkpoint(path: str | Path, expect: Mapping[str, Any] | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint; every key of ``expect`` must equal the stored metadata."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    remedy = "delete it and run the stage that writes it again (prepare for dense.pt / pruned.pt)"
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CorruptCheckpointError(f"checkpoint {str(path)!r} is unreadable (truncated or damaged: "
                                     f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                                     f"{remedy}") from err
    if not isinstance(payload, dict) or payload.get("checksum") != state_checksum(payload.get("state", {})):
        raise CorruptCheckpointError(f"checkpoint {str(path)!r} does not match its recorded checksum "
                                     f"(damaged, or not written by nni_safs); {remedy}")
    if expect:
        stored = payload.get("meta", {})
        diffs = [f"{key}: requested {value!r}, checkpoint has {stored.get(key, '<missing>')!r}"
                 for key, value in expect.items() if stored.get(key) != value]
        if diffs:
            raise CheckpointMismatchError(
                f"checkpoint {str(path)!r} was made with other settings ({'; '.join(diffs)}); "
                "use another workspace or delete it to recompute")
    return payload
