"""Late Acceptance Hill Climbing as a pure ask/tell state machine (stage 1 of SAFS).

Kept free of NNI and torch so the search logic is deterministic, unit-testable and resumable on
its own; the NNI tuner adapter only translates NNI calls into :meth:`ask` and :meth:`tell`.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple, Sequence

from nni_safs.method.state import LogView, assemble

_STATE_VERSION = 2
_INF = "inf"  # JSON has no infinity; energies of failed evaluations are stored as this string


@dataclass(frozen=True)
class LahcArguments:
    """The algorithm's own knobs (frozen, so the shared default instance cannot be mutated)."""

    history: int = 3
    min_steps: int = 20
    idle_fraction: float = 0.02
    max_steps: int = 100

    def __post_init__(self) -> None:
        for name in ("history", "min_steps", "max_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"LahcArguments.{name} must be an int, got {value!r}")
        if self.history < 1:
            raise ValueError(f"LahcArguments.history must be >= 1, got {self.history!r}")
        if self.min_steps < 1:
            raise ValueError(f"LahcArguments.min_steps must be >= 1, got {self.min_steps!r}")
        if self.max_steps < self.min_steps:
            raise ValueError(
                f"LahcArguments.max_steps must be >= min_steps ({self.min_steps}), got {self.max_steps!r}")
        if not 0 <= self.idle_fraction < 1:  # also rejects NaN
            raise ValueError(f"LahcArguments.idle_fraction must be in [0, 1), got {self.idle_fraction!r}")


class Candidate(NamedTuple):
    """A genome handed out for evaluation; ids 0..m-1 are the m initial genomes, step k has id m + k.

    A (key, params) pair, as every :class:`~nni_safs.method.optimizer.Optimizer` hands out."""

    id: int
    genome: dict[str, str]


def lahc_accept(new_energy: float, current_energy: float, history_energy: float) -> bool:
    """Accept a neighbour that beats the energy remembered L steps ago or is no worse than now.

    Comparing against the delayed history lets the search walk through worse states early on
    while still converging as the history fills with better energies.
    """
    return new_energy < history_energy or new_energy <= current_energy


def _clean_fitness(fitness: float | None) -> float | None:
    """Failed evaluations (None, NaN, +-inf) become None so they are stored JSON-safe."""
    if fitness is None:
        return None
    fitness = float(fitness)
    return fitness if math.isfinite(fitness) else None


def _energy(fitness: float | None) -> float:
    """E = 1 / fitness; a failed or non-positive fitness is the worst possible energy."""
    return 1.0 / fitness if fitness is not None and fitness > 0 else math.inf


def _enc(energy: float) -> float | str:
    return _INF if math.isinf(energy) else energy


def _dec(energy: float | str) -> float:
    return math.inf if energy == _INF else float(energy)


class LateAcceptanceHillClimbing:
    """Late Acceptance Hill Climbing (Burke & Bykov 2017, "The late acceptance hill-climbing
    heuristic", EJOR 258(1)) over a layer-wise genome, as the SAFS reference runs it.

    The reference code uses the ``lahc`` package (Gunnstein/lahc ``_lahc.py``); this follows it
    exactly: a move sets one random slot to a random op and then swaps the ops of two random
    slots; the idle counter resets whenever the candidate beats the *current* state (not only a
    new best) and grows otherwise; after each step the history entry ``hist[k % L]`` takes the
    current energy (the candidate's if accepted, the old one if rejected) whenever it is lower.

    Start: by default one random genome (the paper). ``initial`` replaces it with given genomes
    (e.g. every uniform genome): they are all evaluated, in parallel if asked so, the best one
    becomes the starting state and fills the history, and the steps begin from there.

    Parallel trials: :meth:`ask` may be called repeatedly before results arrive (each neighbour is
    a move of the current genome at ask time). Results are buffered and folded in ask order, so the
    outcome does not depend on arrival order. Once the stop rule fires, :meth:`ask` returns None and
    results still in flight are kept in :attr:`trace` as discarded.
    """

    def __init__(self, slots: Sequence[str], choices: Sequence[str],
                 args: LahcArguments = LahcArguments(), seed: int = 0,
                 initial: Sequence[dict[str, str]] | None = None) -> None:
        if not slots:
            raise ValueError("slots must not be empty")
        if not choices:
            raise ValueError("choices must not be empty")
        if len(set(slots)) != len(slots):
            raise ValueError(f"slots must be unique, got {list(slots)!r}")
        self.slots: list[str] = list(slots)
        self.choices: list[str] = list(choices)
        self.args = args
        self.seed = seed
        self._rng = random.Random(seed)
        self._current: dict[str, str] = {slot: self._rng.choice(self.choices) for slot in self.slots}
        self.initial: list[dict[str, str]] = [dict(g) for g in initial] if initial else [dict(self._current)]
        for genome in self.initial:
            if list(genome) != self.slots or not set(genome.values()) <= set(self.choices):
                raise ValueError(f"initial genome {genome!r} must set every slot {self.slots} to one of {self.choices}")
        self._current = dict(self.initial[0])
        self._current_energy = math.inf
        self._best: dict[str, str] | None = None
        self._best_energy = math.inf
        self._best_fitness: float | None = None
        self._history: list[float] = []
        self._asked: dict[int, dict[str, str]] = {}  # asked and not yet folded or discarded
        self._results: dict[int, float | None] = {}  # told, waiting for earlier ids to be folded
        self._next_id = 0
        self._next_fold = 0
        self._idle = 0
        self._finished = False
        self.trace: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ ask / tell
    def ask(self) -> Candidate | None:
        """Next genome to evaluate, or None when finished or the step budget is all handed out."""
        start = len(self.initial)
        if self._finished or self._next_id >= start + self.args.max_steps:
            return None
        if self._next_id < start:
            genome = dict(self.initial[self._next_id])
        elif start > 1 and self._next_fold < start:
            return None  # the starting state is the best initial genome: wait until all are folded
        else:
            genome = self._move(self._current)
        candidate = Candidate(self._next_id, genome)
        self._asked[candidate.id] = dict(genome)
        self._next_id += 1
        return candidate

    def tell(self, candidate_id: int, fitness: float | None) -> None:
        """Record a result (None/NaN/<= 0 = failed) and fold every result that is now in order."""
        if candidate_id not in self._asked:
            if 0 <= candidate_id < self._next_id:
                raise ValueError(f"candidate {candidate_id} was already told")
            raise ValueError(f"candidate {candidate_id} was never asked (next id is {self._next_id})")
        if candidate_id in self._results:
            raise ValueError(f"candidate {candidate_id} was already told")
        fitness = _clean_fitness(fitness)
        if self._finished:
            self._discard(candidate_id, fitness)
            return
        self._results[candidate_id] = fitness
        while not self._finished and self._next_fold in self._results:
            self._fold(self._next_fold)
        if self._finished:
            for late_id in sorted(self._results):
                self._discard(late_id, self._results[late_id])

    # ------------------------------------------------------------------ properties
    @property
    def finished(self) -> bool:
        """True once the stop rule fired (or max_steps were folded)."""
        return self._finished

    @property
    def pending(self) -> int:
        """Candidates asked but not yet told; the caller waits on these when ask() returns None."""
        return len(self._asked) - len(self._results)

    @property
    def steps(self) -> int:
        """Neighbour steps folded so far (the initial genomes are not steps)."""
        return max(self._next_fold - len(self.initial), 0)

    @property
    def best(self) -> tuple[dict[str, str], float] | None:
        """(genome, fitness) of the best successful evaluation folded so far, or None."""
        if self._best is None or self._best_fitness is None:
            return None
        return dict(self._best), self._best_fitness

    @property
    def bounds(self) -> tuple[int, int]:
        """(fewest, most) evaluations: the initial genomes, then min_steps + 1..max_steps steps."""
        return (len(self.initial) + min(self.args.min_steps + 1, self.args.max_steps),
                len(self.initial) + self.args.max_steps)

    @property
    def current(self) -> dict[str, str]:
        """The genome neighbours are currently generated from."""
        return dict(self._current)

    # ------------------------------------------------------------------ internals
    def _move(self, genome: dict[str, str]) -> dict[str, str]:
        """Mutate one random slot, then swap two random slots (at most 3 slots change)."""
        new = dict(genome)
        new[self._rng.choice(self.slots)] = self._rng.choice(self.choices)
        if len(self.slots) >= 2:
            a, b = self._rng.sample(self.slots, 2)
            new[a], new[b] = new[b], new[a]
        return new

    def _fold(self, candidate_id: int) -> None:
        fitness = self._results.pop(candidate_id)
        genome = self._asked.pop(candidate_id)
        energy = _energy(fitness)
        improved = energy < self._best_energy
        start = len(self.initial)
        if candidate_id < start:  # an initial genome: the best of them is the starting state
            accepted = candidate_id == 0 or energy < self._current_energy
            if accepted:
                self._current, self._current_energy = genome, energy
            self._history = [self._current_energy] * self.args.history
        else:
            slot = (candidate_id - start) % self.args.history
            accepted = lahc_accept(energy, self._current_energy, self._history[slot])
            self._idle = 0 if energy < self._current_energy else self._idle + 1
            if accepted:
                self._current, self._current_energy = genome, energy
            if self._current_energy < self._history[slot]:
                self._history[slot] = self._current_energy
        if improved:
            self._best, self._best_energy, self._best_fitness = genome, energy, fitness
        self._next_fold = candidate_id + 1
        self._record(candidate_id, genome, fitness, energy, accepted, improved, discarded=False)
        steps = self.steps
        if steps >= self.args.max_steps or (
                steps > self.args.min_steps and self._idle > self.args.idle_fraction * steps):  # as `lahc`
            self._finished = True

    def _discard(self, candidate_id: int, fitness: float | None) -> None:
        self._results.pop(candidate_id, None)
        genome = self._asked.pop(candidate_id)
        self._record(candidate_id, genome, fitness, _energy(fitness), False, False, discarded=True)

    def _record(self, candidate_id: int, genome: dict[str, str], fitness: float | None, energy: float,
                accepted: bool, improved: bool, discarded: bool) -> None:
        self.trace.append({"id": candidate_id, "genome": dict(genome), "fitness": fitness, "energy": energy,
                           "accepted": accepted, "improved_best": improved, "idle": self._idle,
                           "history": list(self._history), "discarded": discarded})

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable full state (RNG, in-flight and buffered results included) for resuming."""
        return assemble(self.state_head(), self.state_logs())

    def state_head(self) -> dict[str, Any]:
        """The state but the trace: small, whatever the number of steps (see :mod:`nni_safs.storage.journal`)."""
        version, internal, gauss_next = self._rng.getstate()
        return {
            "version": _STATE_VERSION,
            "slots": list(self.slots),
            "choices": list(self.choices),
            "args": asdict(self.args),
            "seed": self.seed,
            "initial": [dict(g) for g in self.initial],
            "rng": [version, list(internal), gauss_next],
            "current": dict(self._current),
            "current_energy": _enc(self._current_energy),
            "best": None if self._best is None else dict(self._best),
            "best_energy": _enc(self._best_energy),
            "best_fitness": self._best_fitness,
            "history": [_enc(e) for e in self._history],
            "asked": [[i, dict(g)] for i, g in self._asked.items()],
            "results": [[i, f] for i, f in self._results.items()],
            "next_id": self._next_id,
            "next_fold": self._next_fold,
            "idle": self._idle,
            "finished": self._finished,
        }

    def state_logs(self) -> dict[str, LogView]:
        """The parts of the state that only grow."""
        return {"trace": LogView(self.trace, lambda entry: {
            **entry, "genome": dict(entry["genome"]), "energy": _enc(entry["energy"]),
            "history": [_enc(e) for e in entry["history"]]})}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> LateAcceptanceHillClimbing:
        """Rebuild an object that continues exactly as the one that produced ``state``."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported LAHC state version {state.get('version')!r}, "
                             f"expected {_STATE_VERSION}")
        obj = cls(state["slots"], state["choices"], LahcArguments(**state["args"]), state["seed"], state["initial"])
        version, internal, gauss_next = state["rng"]
        obj._rng.setstate((version, tuple(internal), gauss_next))
        obj._current = dict(state["current"])
        obj._current_energy = _dec(state["current_energy"])
        obj._best = None if state["best"] is None else dict(state["best"])
        obj._best_energy = _dec(state["best_energy"])
        obj._best_fitness = state["best_fitness"]
        obj._history = [_dec(e) for e in state["history"]]
        obj._asked = {int(i): dict(g) for i, g in state["asked"]}
        obj._results = {int(i): f for i, f in state["results"]}
        obj._next_id = state["next_id"]
        obj._next_fold = state["next_fold"]
        obj._idle = state["idle"]
        obj._finished = state["finished"]
        obj.trace = [{**entry, "genome": dict(entry["genome"]), "energy": _dec(entry["energy"]),
                      "history": [_dec(e) for e in entry["history"]]} for entry in state["trace"]]
        return obj
