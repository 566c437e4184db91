"""A stage-2 study whose best trials are promoted to longer budgets (``hpo_promotion: asha``).

A :class:`~nni_safs.method.optimizer.Study` (NNI's TPE by default) proposes ``n_trials``
hyperparameter sets, each evaluated at the lowest rung; asynchronous successive halving
(:class:`~nni_safs.method.asha.Ladder`, stage 1's rule) promotes a set to the next rung, with
``reduction_factor`` times the epochs, as soon as it is in the top ``1 / reduction_factor`` of
its rung's results so far; the study's best is the best at the highest rung reached, so a final
column starts from hyperparameters measured at the top rung's budget. This is TPE with a
successive-halving scheduler (Optuna's TPE with its Hyperband/SH pruner, BOHB's budgets) for
trials that cannot be paused: a promoted set is fine-tuned again from the pruned checkpoint.

**What the tuner is told.** Each proposal's lowest-rung score, once, as its result: that is
the one budget every proposal is measured at, so the tuner's model compares like with like.
Scores at higher rungs are not fed back to it: they are higher for training longer, not for
better hyperparameters, and only a few sets reach them (BOHB models a budget only once it has
more observations than dimensions; our studies have a handful at the top). They rank the
promoted sets among themselves, which is what picks the study's best.

Kept free of NNI and torch: the study it wraps is handed in.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from nni_safs.method.asha import Ladder
from nni_safs.method.optimizer import Study
from nni_safs.method.state import LogView


class HalvingStudy(Ladder):
    """``study``'s ``n_trials`` proposals on the rungs ``rungs`` (epochs, lowest first).

    Follows the :class:`~nni_safs.method.optimizer.Study` protocol: ``ask`` hands out ``(id,
    params)`` where :meth:`rung_of` gives the id's rung; ``history`` is the wrapped study's (the
    lowest-rung results the tuner saw, e.g. for another study's warm start).

    Args:
        study: proposes the sets started at the lowest rung and is told their scores there.
        rungs: each rung's budget in epochs, lowest first.
        reduction_factor: a rung promotes its top 1/this.
    """

    POINT = "params"

    def __init__(self, study: Study, rungs: Sequence[int], reduction_factor: int) -> None:
        if reduction_factor < 2:
            raise ValueError(f"reduction_factor must be >= 2, got {reduction_factor!r}")
        needed = reduction_factor ** (len(rungs) - 1)
        if study.n_trials < needed:
            raise ValueError(f"the study's n_trials must be >= {needed} (reduction_factor ** (rungs - 1), rungs "
                             f"{list(rungs)}) so a set can reach the top rung, got {study.n_trials!r}")
        super().__init__(rungs, reduction_factor)
        self.study = study
        self.keys: list[Any] = []  # trial -> the study's key for it

    @property
    def starts(self) -> int:
        """Sets started at the lowest rung in all: the study's ``n_trials`` (fewer when its tuner
        explored a small space)."""
        return self.study.n_trials

    @property
    def n_trials(self) -> int:
        return self.study.n_trials

    @property
    def history(self) -> list[dict]:
        """The study's told results: every set's lowest-rung score."""
        return self.study.history

    @property
    def finished(self) -> bool:
        return self.study.finished and super().finished

    @property
    def bounds(self) -> tuple[int, int]:
        """(fewest, most) evaluations; exact once finished."""
        return (self.next_id, self.next_id) if self.finished else super().bounds

    def _new_point(self) -> dict[str, Any] | None:
        asked = self.study.ask()
        if asked is None:  # the tuner waits for results, or explored the whole space
            return None
        key, params = asked
        self.keys.append(key)
        return params

    def _on_tell(self, trial: int, rung: int, fitness: float | None) -> None:
        if rung == 0:
            self.study.tell(self.keys[trial], fitness)

    # ------------------------------------------------------------------ persistence
    def state_head(self) -> dict[str, Any]:
        return {"rungs": list(self.rungs), "reduction_factor": self.reduction_factor,
                "study": self.study.state_head(), **self.ladder_head()}

    def state_logs(self) -> dict[str, LogView]:
        return {**super().state_logs(), "keys": LogView(self.keys),
                **{f"study.{name}": log for name, log in self.study.state_logs().items()}}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], restore_study: Callable[[dict], Study]) -> HalvingStudy:
        """The study a :meth:`state_dict` was saved from; ``restore_study`` rebuilds the wrapped one."""
        obj = cls(restore_study(state["study"]), state["rungs"], state["reduction_factor"])
        obj._restore_ladder(state)
        obj.keys = list(state["keys"])
        return obj
