"""The one protocol the pipeline drives a search or a study through.

Stage 1 runs LAHC (:class:`~nni_safs.method.lahc.LateAcceptanceHillClimbing`) or one of NNI's
built-in tuners (:class:`~nni_safs.integration.nni_tuners.TunerStream`); each stage-2 study is a
TunerStream, or with ``hpo_promotion`` a :class:`~nni_safs.method.halving_study.HalvingStudy`
around one. All hand out ``(key, params)`` pairs and are told ``(key, value)``, so the
pipeline never asks which one it holds.
"""
from __future__ import annotations

from typing import Any, Protocol

from nni_safs.method.state import LogView


class Optimizer(Protocol):
    """A search or a study as ask/tell: hands out ``(key, params)``, is told ``(key, value)``."""
    def ask(self) -> tuple[Any, dict] | None:
        """The next (key, params) to evaluate; None while it waits on results or is done asking."""

    def tell(self, key: Any, value: float) -> None:
        """The value of an evaluation it asked for (0 for a failed one)."""

    @property
    def finished(self) -> bool:
        """Nothing more will be asked, and ``best`` is final (LAHC ignores results still in flight)."""

    @property
    def best(self) -> tuple[dict, float] | None:
        """(params, value) of the best successful evaluation so far."""

    @property
    def bounds(self) -> tuple[int, int]:
        """(fewest, most) evaluations it asks for in all."""

    def state_head(self) -> dict:
        """The small part of its state (see :mod:`nni_safs.storage.journal`)."""

    def state_logs(self) -> dict[str, LogView]:
        """The parts of its state that only grow."""


class Study(Optimizer, Protocol):
    """``n_trials`` suggestions of a tuner over a space (stage 2, or stage 1 without LAHC)."""

    n_trials: int
    history: list[dict]  # {"id", "params", "value"} of the told results, in order


class Studies(Protocol):
    """Makes a :class:`Study`, or restores one from its ``state_dict()``."""

    def __call__(self, tuner_name: str, space: dict, n_trials: int, seed: int = 0, *,
                 prior: list[dict] | None = None, first: list[dict] | None = None) -> Study:
        """A new study; ``prior``: another study's history to start from; ``first``: points asked first."""

    def from_state_dict(self, state: dict) -> Study:
        """The study a ``state_dict()`` was saved from."""
