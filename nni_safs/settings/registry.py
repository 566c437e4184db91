"""A name -> builder table shared by the model, dataset and operator catalogs.

Modelled on timm's ``@register_model`` (and its ``default_cfgs``): a user adds an entry with
one decorated function in their own code, together with the facts the rest of the package
needs about it (a model's training defaults and input size, a dataset's files), and an
unknown name fails with the list of the known ones. An entry given as ``"module:attribute"``
is imported when first used: the built-ins are registered that way, with their facts, so that
loading and checking a run's settings does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` appears in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._facts: dict[str, Any] = {}

    def register(self, name: str, *, overwrite: bool = False, facts: Any = None) -> Callable[[T | str], T | str]:
        """Decorator adding ``entry`` (or its ``"module:attribute"``) and its ``facts`` under ``name``;
        refuses silent replacement."""
        def add(entry: T | str) -> T | str:
            if name in self._entries and not overwrite:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = entry
            self._facts[name] = facts
            return entry
        return add

    def facts(self, name: str) -> Any:
        """What was registered about ``name`` besides its builder."""
        self.check(name)
        return self._facts[name]

    def get(self, name: str) -> T:
        try:
            entry = self._entries[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}"
            ) from None
        if isinstance(entry, str):
            module, _, attribute = entry.partition(":")
            try:
                entry = self._entries[name] = getattr(importlib.import_module(module), attribute)
            except (ImportError, AttributeError) as err:
                raise ValueError(f"{self.kind} {name!r} is registered as {entry!r}, which cannot be imported "
                                 f"({type(err).__name__}: {err})") from err
        return entry

    def check(self, name: str) -> str:
        """Return ``name`` if registered, else raise the same ValueError as :meth:`get` (without
        importing a lazily registered entry)."""
        if name not in self._entries:
            self.get(name)
        return name

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
