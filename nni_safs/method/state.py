"""A state as a small *head* and *logs* (collections that only grow), so a store can save it
by appending what changed (:class:`nni_safs.storage.journal.Journal`).

A log is named by its path in the state (``"pipeline.search.trace"``); :func:`assemble` puts
head and logs together into the plain dict a ``state_dict()`` returns.
"""
from __future__ import annotations

import itertools
import json
from typing import Any, Callable, Collection, Iterator, Mapping, Sequence


class LogView(Sequence):
    """An append-only collection (a list, or a dict's items in insertion order) as a sequence of
    JSON-ready items, encoded only when read: the journal reads just the new tail."""

    def __init__(self, items: Collection, encode: Callable[[Any], Any] = lambda item: item) -> None:
        self.items, self.encode = items, encode

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self.items))
            return [self.encode(item) for item in itertools.islice(self.items, start, stop, step)]
        return self[index:index + 1 or None][0]

    def __iter__(self) -> Iterator:
        return (self.encode(item) for item in self.items)


def assemble(head: Mapping[str, Any], logs: Mapping[str, Sequence]) -> dict[str, Any]:
    """The full state: ``head`` with each log's items placed at its dotted path."""
    state = json.loads(json.dumps(head))  # a copy: the caller's head is not changed
    for path, items in logs.items():
        *parents, name = path.split(".")
        node = state
        for key in parents:
            node = node[key]
        node[name] = list(items)
    return state
