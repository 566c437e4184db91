"""Files replaced whole or not at all: what every state, result and checkpoint is written with."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
        sync_directory(path.parent)  # the rename itself survives a power cut
    except OSError as err:  # e.g. a full disk: name the file, keep the previous one
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, f"could not write {str(path)!r}: {err.strerror or err}") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sync_directory(folder: str | Path) -> None:
    """Make the names in ``folder`` (renames, new files, removals) durable, where the OS allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # e.g. Windows: directories cannot be opened
    try:
        os.fsync(fd)
    except OSError:
        pass  # a file system that cannot sync directories
    finally:
        os.close(fd)
