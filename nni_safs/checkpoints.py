"""Checkpoints that remember what produced them, written atomically.

A checkpoint is ``{"meta": {...}, "state": {...}, "checksum": ..., **extra}`` saved with
``torch.save``. The metadata (model, dataset, seed, ratio, scope, ...) is compared on load, so
a workspace prepared with other settings is refused instead of silently reused; the checksum
(SHA-256 of the state's tensors) is verified on load, so a truncated or damaged file is refused
by name instead of being read as a model.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch


class CheckpointMismatchError(ValueError):
    """The checkpoint on disk was produced by other settings than the ones requested."""


class CorruptCheckpointError(ValueError):
    """The checkpoint file cannot be read back as written (truncated, damaged)."""


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
    except OSError as err:  # e.g. a full disk: name the file, keep the previous one
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, f"could not write {str(path)!r}: {err.strerror or err}") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, state: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
                    **extra: Any) -> None:
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
