"""A JSON state saved by appending what changed: a snapshot plus a journal of changes.

The SAFS state (the tuner's and the in-process runner's) is a small *head*, replaced at every
save, and *logs*: collections that only ever grow (jobs issued, results told, the search
trace, each study's history; see :mod:`nni_safs.method.state`). Rewriting the whole state after
every result costs O(results) per result; :class:`Journal` appends one line with the head and each
log's new items instead, and folds the journal into a new snapshot once it outgrows it, so a
save costs O(1) amortized however long the experiment. A crash loses nothing that was saved:
each line is flushed and synced, a torn last line (a crash mid-write) is ignored, and a line
already folded into the snapshot (a crash between the two writes) is skipped by its number.

One writer at a time, locked before it reads: opening a :class:`Journal` takes an exclusive
lock (``path`` + ``.lock``) that it holds until :meth:`Journal.close` or the process ends. A
second writer is refused at once with the holder's pid (``safs run`` on a busy workspace,
before it trains anything); the tuner waits up to ``LOCK_WAIT_SECONDS`` for it, as the
dispatcher that ``nnictl resume`` replaced exits within seconds. :meth:`Journal.read` reads
without writing (a report, a test).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from nni_safs.method.state import assemble
from nni_safs.storage.atomic import atomic_write, sync_directory

LOCK_WAIT_SECONDS = 30.0


class CorruptStateError(ValueError):
    """A saved state that cannot be read back (not a crash's torn last line)."""


class StateLockedError(RuntimeError):
    """Another process writes this state."""


class Journal:
    """``path`` holds the snapshot, ``path`` + ``.journal`` the changes since."""

    def __init__(self, path: str | Path, wait: float = 0.0) -> None:
        """Open the state at ``path`` as its only writer; ``wait``: seconds to wait for another
        writer to let go before :class:`StateLockedError` (0: refuse at once)."""
        self.path = Path(path)
        self.journal_path = self.path.with_name(self.path.name + ".journal")
        self._seq = 0  # number of the last save
        self._written: dict[str, int] = {}  # items of each log already saved
        self._snapshot_bytes = 0
        self._journal_bytes = 0
        self._lock: Any = None  # the open lock file while this journal is the state's writer
        self._take_lock(wait)

    @classmethod
    def read(cls, path: str | Path) -> dict[str, Any] | None:
        """The last saved state at ``path``, read without writing (no lock; a torn last line,
        perhaps a save under way, is left alone)."""
        reader = cls.__new__(cls)
        reader.path = Path(path)
        reader.journal_path = reader.path.with_name(reader.path.name + ".journal")
        reader._lock = None
        return reader._read(repair=False)

    def _take_lock(self, wait: float) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path.with_name(self.path.name + ".lock"), "a+")
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    handle.close()
                    raise StateLockedError(f"{self.path} is written by another process (pid {holder}): "
                                           "another `safs run` on this workspace, or another SAFS tuner of "
                                           "this experiment; stop it first") from None
                time.sleep(0.1)
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def close(self) -> None:
        """Give up writing this state (another journal may then open it)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def exists(self) -> bool:
        return self.path.is_file() or self.journal_path.is_file()

    def save(self, head: Mapping[str, Any], logs: Mapping[str, Sequence]) -> None:
        if self._lock is None:
            raise StateLockedError(f"{self.path}: this journal was closed; open it again to write")
        shrunk = any(len(items) < self._written.get(path, 0) for path, items in logs.items())
        if shrunk or not self.path.is_file() or self._journal_bytes > max(self._snapshot_bytes, 1 << 16):
            self._snapshot(head, logs)
            return
        self._seq += 1
        line = {"seq": self._seq, "head": head,
                "append": {path: items[self._written.get(path, 0):] for path, items in logs.items()
                           if path not in self._written or len(items) > self._written[path]}}
        data = (json.dumps(line) + "\n").encode()
        new = not self.journal_path.exists()
        with open(self.journal_path, "ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if new:
            sync_directory(self.journal_path.parent)
        self._journal_bytes += len(data)
        self._written.update({path: len(items) for path, items in logs.items()})

    def _snapshot(self, head: Mapping[str, Any], logs: Mapping[str, Sequence]) -> None:
        self._seq += 1
        data = json.dumps({"seq": self._seq, "head": head, "logs": {p: list(items) for p, items in logs.items()}})
        atomic_write(self.path, lambda handle: handle.write(data.encode()))
        self.journal_path.unlink(missing_ok=True)  # every line is in the snapshot now
        self._snapshot_bytes, self._journal_bytes = len(data), 0
        self._written = {path: len(items) for path, items in logs.items()}

    def load(self) -> dict[str, Any] | None:
        """The last saved state (None when nothing was saved); later saves continue from it."""
        return self._read(repair=True)

    def _read(self, repair: bool) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            snapshot = json.loads(self.path.read_text())
            seq, head, logs = snapshot["seq"], snapshot["head"], snapshot["logs"]
        except (ValueError, KeyError) as err:
            raise CorruptStateError(f"{self.path} is not a SAFS state snapshot ({err}): it is damaged, or was "
                                    "written by an nni-safs release before 0.2 (whose experiments cannot be "
                                    "resumed by this one)") from None
        self._snapshot_bytes, self._journal_bytes = self.path.stat().st_size, 0
        lines = self.journal_path.read_bytes().splitlines(keepends=True) if self.journal_path.is_file() else []
        for number, raw in enumerate(lines):
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("no end of line")
                line = json.loads(raw)
            except ValueError:
                if number == len(lines) - 1:  # torn by a crash mid-write: that save never completed
                    if repair:
                        os.truncate(self.journal_path, self._journal_bytes)  # later lines start clean
                    break
                raise CorruptStateError(f"{self.journal_path}: line {number + 1} is damaged") from None
            self._journal_bytes += len(raw)
            if line["seq"] <= seq:  # already in the snapshot (a crash between snapshot and clean-up)
                continue
            seq, head = line["seq"], line["head"]
            for path, items in line["append"].items():
                logs.setdefault(path, []).extend(items)
        self._seq = seq
        self._written = {path: len(items) for path, items in logs.items()}
        return assemble(head, logs)
