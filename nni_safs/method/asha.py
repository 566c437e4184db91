"""Asynchronous successive halving over layer-wise genomes: a multi-fidelity stage 1 (ask/tell).

ASHA (Li et al., "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020) spends a
small budget on many genomes and a large one on few: genomes start at the lowest rung, and a
genome is promoted to the next rung (``reduction_factor`` times the epochs) as soon as it is
in the top ``1 / reduction_factor`` of the results of its rung *so far*, so with several
trials in flight no slot waits for a rung to fill. The top rung's budget is the one stage 1 is
judged by (the final budget), so the top rung also does the work of the confirmation: the
winner is the best genome measured there. Differences from the paper: the number of genomes
is fixed (``genomes``, so a run has a known size), a promoted genome is fine-tuned again from
the pruned checkpoint with the longer budget (no checkpoint is carried over between rungs),
and ``anchors`` (the model's own activation) are measured once at the top rung, so a searched
genome wins only where it beat them there.

The rung bookkeeping and the promotion rule are :class:`Ladder`, over any points: stage 1's
:class:`SuccessiveHalving` starts genomes, stage 2's
:class:`~nni_safs.method.halving_study.HalvingStudy` a tuner's suggestions.

Kept free of NNI and torch, as :mod:`nni_safs.method.lahc`.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple, Sequence

from nni_safs.method.state import LogView, assemble

_STATE_VERSION = 1
_DRAWS = 100  # tries to draw a genome not started before (the space may be smaller than ``genomes``)


def rung_epochs(min_epochs: int, max_epochs: int, reduction_factor: int) -> tuple[int, ...]:
    """The rungs' budgets, lowest first: ``max_epochs / reduction_factor**k`` rounded, for every k
    that keeps it at least ``min_epochs`` (e.g. 3, 3, 30 -> 3, 10, 30), so the top rung is exactly
    ``max_epochs`` and each rung ``reduction_factor`` times the one below."""
    top = 0
    while max_epochs / reduction_factor ** (top + 1) >= min_epochs:
        top += 1
    return tuple(round(max_epochs / reduction_factor ** (top - k)) for k in range(top + 1))


@dataclass(frozen=True)
class AshaArguments:
    """The algorithm's own knobs (not the trials' hyperparameters)."""

    genomes: int = 27          # genomes started at the lowest rung
    min_epochs: int = 3        # the lowest rung's budget is at least this
    max_epochs: int = 30       # the top rung's budget
    reduction_factor: int = 3  # each rung keeps 1/this of the one below, at this many times the epochs

    def __post_init__(self) -> None:
        for name in ("genomes", "min_epochs", "max_epochs", "reduction_factor"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"AshaArguments.{name} must be a positive int, got {value!r}")
        if self.reduction_factor < 2:
            raise ValueError(f"AshaArguments.reduction_factor must be >= 2, got {self.reduction_factor!r}")
        if self.min_epochs > self.max_epochs:
            raise ValueError(f"AshaArguments.min_epochs ({self.min_epochs}) must be <= max_epochs "
                             f"({self.max_epochs})")
        needed = self.reduction_factor ** (len(self.rungs) - 1)
        if self.genomes < needed:
            raise ValueError(f"AshaArguments.genomes must be >= {needed} (reduction_factor ** (rungs - 1), "
                             f"rungs {list(self.rungs)}) so a genome can reach the top rung, got {self.genomes!r}")

    @property
    def rungs(self) -> tuple[int, ...]:
        """Each rung's budget in epochs, lowest first."""
        return rung_epochs(self.min_epochs, self.max_epochs, self.reduction_factor)


class RungCandidate(NamedTuple):
    """A point (a genome, a study's hyperparameters) handed out for evaluation at a rung: ``(id,
    point)`` as every optimizer's ``(key, params)``; :meth:`Ladder.rung_of` gives its rung from the id."""

    id: int
    genome: dict[str, Any]  # the point (named for stage 1, where it is a genome)


def _clean_fitness(fitness: float | None) -> float | None:
    """A failed evaluation (None, NaN, +-inf, <= 0) as None: it is never promoted nor best."""
    if fitness is None:
        return None
    fitness = float(fitness)
    return fitness if math.isfinite(fitness) and fitness > 0 else None


class Ladder:
    """The rungs of asynchronous successive halving over points (dicts) a subclass starts.

    Each point ("trial" ``t``: ``trials[t]``) is evaluated at rung 0 and, when promoted, at
    the rungs above. :meth:`ask` hands out, in this order: an anchor not yet measured (at the
    top rung); a promotion, from the highest rung down (the trial ranked best among the rung's
    results so far that is in their top ``len // reduction_factor`` and not promoted yet); a new
    point at rung 0 (:meth:`_new_point`) until :attr:`starts` have started; else None (waiting
    on results, or finished). It is finished once every point has started, every result is in
    and nothing is left to promote: at that point the top ``1 / reduction_factor`` of every rung
    was promoted, as synchronous successive halving would (asynchrony may promote a few more,
    never fewer). Its course depends on the order results arrive in (a promotion is decided on
    the results in so far), as in the paper; one trial at a time it is deterministic.

    Subclasses say how many points start (:attr:`starts`), where they come from
    (:meth:`_new_point`) and what else a result feeds (:meth:`_on_tell`).
    """

    POINT = "point"  # a trace entry's key for the trial's point

    def __init__(self, rungs: Sequence[int], reduction_factor: int,
                 anchors: Sequence[dict[str, Any]] | None = None) -> None:
        self.rungs, self.reduction_factor = tuple(rungs), reduction_factor
        self.anchors = [dict(g) for g in anchors or []]
        self.trials: list[dict[str, Any]] = []  # anchors first, then the started points in start order
        self._asked: dict[int, tuple[int, int]] = {}  # id -> (trial, rung), asked and not yet told
        self._told: dict[tuple[int, int], tuple[int, float | None]] = {}  # (trial, rung) -> (id, fitness)
        self._next_id = 0
        self.trace: list[dict[str, Any]] = []  # one entry per told result, in the order told

    # ------------------------------------------------------------------ what a subclass says
    @property
    def starts(self) -> int:
        """Points started at rung 0 in all (anchors not counted)."""
        raise NotImplementedError

    def _new_point(self) -> dict[str, Any] | None:
        """The next point to start at rung 0; None while none can be given yet."""
        raise NotImplementedError

    def _on_tell(self, trial: int, rung: int, fitness: float | None) -> None:
        """A result told (``fitness`` as given), after the ladder recorded it."""

    # ------------------------------------------------------------------ ask / tell
    def ask(self) -> RungCandidate | None:
        """The next (id, point) to evaluate, or None while waiting on results or when finished."""
        top = len(self.rungs) - 1
        if len(self.trials) < len(self.anchors):
            return self._issue(self._start(self.anchors[len(self.trials)]), top)
        for rung in reversed(range(top)):
            trial = self._promotable(rung)
            if trial is not None:
                return self._issue(trial, rung + 1)
        if self.started < self.starts and (point := self._new_point()) is not None:
            return self._issue(self._start(point), 0)
        return None

    def tell(self, candidate_id: int, fitness: float | None) -> None:
        """Record a result (None, NaN or <= 0: failed, never promoted)."""
        if candidate_id not in self._asked:
            told = any(i == candidate_id for i, _ in self._told.values())
            raise ValueError(f"candidate {candidate_id} was already told" if told else
                             f"candidate {candidate_id} was never asked (next id is {self._next_id})")
        trial, rung = self._asked.pop(candidate_id)
        clean = _clean_fitness(fitness)
        self._told[(trial, rung)] = (candidate_id, clean)
        self.trace.append({"id": candidate_id, "trial": trial, "rung": rung, "epochs": self.rungs[rung],
                           self.POINT: dict(self.trials[trial]), "fitness": clean})
        self._on_tell(trial, rung, fitness)

    def rung_of(self, candidate_id: int) -> int:
        """The rung an asked candidate is evaluated at (its budget: ``rungs[rung_of(id)]``)."""
        if candidate_id in self._asked:
            return self._asked[candidate_id][1]
        for (_, rung), (told_id, _) in self._told.items():
            if told_id == candidate_id:
                return rung
        raise ValueError(f"candidate {candidate_id} was never asked (next id is {self._next_id})")

    # ------------------------------------------------------------------ properties
    @property
    def started(self) -> int:
        """Points started at rung 0 (anchors not counted)."""
        return max(len(self.trials) - len(self.anchors), 0)

    @property
    def pending(self) -> int:
        """Candidates asked but not yet told."""
        return len(self._asked)

    @property
    def next_id(self) -> int:
        """Evaluations asked so far (the next candidate's id)."""
        return self._next_id

    @property
    def finished(self) -> bool:
        """Every point started, every result in, nothing left to promote."""
        return (len(self.trials) == len(self.anchors) + self.starts and not self._asked
                and all(self._promotable(rung) is None for rung in range(len(self.rungs) - 1)))

    @property
    def best(self) -> tuple[dict[str, Any], float] | None:
        """(point, fitness) of the best successful result at the highest rung that has one (the
        top rung once finished); the earliest asked of equals, so an anchor wins a tie."""
        for rung in reversed(range(len(self.rungs))):
            scored = [(told_id, fitness, trial) for (trial, r), (told_id, fitness) in self._told.items()
                      if r == rung and fitness is not None]
            if scored:
                _, fitness, trial = max(scored, key=lambda entry: (entry[1], -entry[0]))
                return dict(self.trials[trial]), fitness
        return None

    @property
    def bounds(self) -> tuple[int, int]:
        """(fewest, most) evaluations: every point once and the anchors (nothing promoted when
        all fail), to every point at every rung (asynchrony has no tighter general bound)."""
        return self.starts + len(self.anchors), self.starts * len(self.rungs) + len(self.anchors)

    # ------------------------------------------------------------------ internals
    def _start(self, point: dict[str, Any]) -> int:
        self.trials.append(dict(point))
        return len(self.trials) - 1

    def _issue(self, trial: int, rung: int) -> RungCandidate:
        candidate = RungCandidate(self._next_id, dict(self.trials[trial]))
        self._asked[candidate.id] = (trial, rung)
        self._next_id += 1
        return candidate

    def _promotable(self, rung: int) -> int | None:
        """The best-ranked trial in the top ``n // reduction_factor`` of ``rung``'s n results so
        far that succeeded and has not been asked at ``rung + 1``; ties go to the earlier asked."""
        results = [(fitness, told_id, trial) for (trial, r), (told_id, fitness) in self._told.items() if r == rung]
        ranked = sorted(results, key=lambda e: (e[0] is None, -(e[0] or 0.0), e[1]))
        issued = {trial for trial, r in [*self._told, *self._asked.values()] if r == rung + 1}
        for fitness, _, trial in ranked[:len(results) // self.reduction_factor]:
            if fitness is not None and trial not in issued:
                return trial
        return None

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable full state (the candidates in flight included) for resuming."""
        return assemble(self.state_head(), self.state_logs())

    def ladder_head(self) -> dict[str, Any]:
        """The ladder's part of :meth:`state_head`: the candidates in flight and the next id."""
        return {"asked": [[i, trial, rung] for i, (trial, rung) in self._asked.items()], "next_id": self._next_id}

    def state_head(self) -> dict[str, Any]:
        """The state but the points started and the results (see :mod:`nni_safs.storage.journal`)."""
        return self.ladder_head()

    def state_logs(self) -> dict[str, LogView]:
        """The parts of the state that only grow: the points started and the results told."""
        return {"trials": LogView(self.trials, dict),
                "trace": LogView(self.trace, lambda entry: {**entry, self.POINT: dict(entry[self.POINT])})}

    def _restore_ladder(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`ladder_head` and :meth:`state_logs` saved."""
        self.trials = [dict(g) for g in state["trials"]]
        self._asked = {int(i): (trial, rung) for i, trial, rung in state["asked"]}
        self.trace = [{**e, self.POINT: dict(e[self.POINT])} for e in state["trace"]]
        self._told = {(e["trial"], e["rung"]): (e["id"], e["fitness"]) for e in self.trace}
        self._next_id = state["next_id"]


class SuccessiveHalving(Ladder):
    """Asynchronous successive halving (ASHA) over a layer-wise genome (:class:`Ladder`'s rule).

    Genomes start in this order: ``initial``, then random genomes not started before, until
    ``args.genomes`` have started.

    Args:
        slots: the genome's slots, in order.
        choices: the ops a slot may take.
        args: budgets and the reduction factor.
        seed: seeds the random genomes.
        initial: genomes started first (e.g. every one-op genome), in order.
        anchors: genomes measured only at the top rung, ranked with the searched ones there
            (ahead of them on a tie): the model's own activation, so stage 1 never picks a
            genome that scored below it at the top budget.
    """

    POINT = "genome"

    def __init__(self, slots: Sequence[str], choices: Sequence[str], args: AshaArguments = AshaArguments(),
                 seed: int = 0, initial: Sequence[dict[str, str]] | None = None,
                 anchors: Sequence[dict[str, str]] | None = None) -> None:
        if not slots or not choices:
            raise ValueError("slots and choices must not be empty")
        if len(set(slots)) != len(slots):
            raise ValueError(f"slots must be unique, got {list(slots)!r}")
        super().__init__(args.rungs, args.reduction_factor, anchors)
        self.slots, self.choices, self.args, self.seed = list(slots), list(choices), args, seed
        self.initial = [dict(g) for g in initial or []]
        for genome in self.initial:
            if list(genome) != self.slots or not set(genome.values()) <= set(self.choices):
                raise ValueError(f"initial genome {genome!r} must set every slot {self.slots} to one of {self.choices}")
        for genome in self.anchors:
            if list(genome) != self.slots:
                raise ValueError(f"anchor genome {genome!r} must set every slot {self.slots}")
        self._rng = random.Random(seed)

    @property
    def starts(self) -> int:
        """Searched genomes started at rung 0 in all."""
        return self.args.genomes

    def _new_point(self) -> dict[str, str]:
        if self.started < len(self.initial):
            return dict(self.initial[self.started])
        seen = {tuple(g.values()) for g in self.trials}
        for _ in range(_DRAWS):
            genome = {slot: self._rng.choice(self.choices) for slot in self.slots}
            if tuple(genome.values()) not in seen:
                break
        return genome  # after _DRAWS repeats, a repeat: the pipeline answers it with the earlier score

    # ------------------------------------------------------------------ persistence
    def state_head(self) -> dict[str, Any]:
        """The state but the genomes started and the results (see :mod:`nni_safs.storage.journal`)."""
        version, internal, gauss_next = self._rng.getstate()
        return {"version": _STATE_VERSION, "slots": list(self.slots), "choices": list(self.choices),
                "args": asdict(self.args), "seed": self.seed, "initial": [dict(g) for g in self.initial],
                "anchors": [dict(g) for g in self.anchors], "rng": [version, list(internal), gauss_next],
                **self.ladder_head()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> SuccessiveHalving:
        """Rebuild an object that continues exactly as the one that produced ``state``."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported ASHA state version {state.get('version')!r}, expected {_STATE_VERSION}")
        obj = cls(state["slots"], state["choices"], AshaArguments(**state["args"]), state["seed"],
                  state["initial"], state["anchors"])
        version, internal, gauss_next = state["rng"]
        obj._rng.setstate((version, tuple(internal), gauss_next))
        obj._restore_ladder(state)
        return obj
