"""NNI's built-in tuners driven in-process as ask/tell optimizers (:class:`TunerStream`).

Stage 2's studies and the stage-1 alternatives (Evolution, TPE, Random, ...) reuse NNI's own
algorithms instead of re-implementing them: the pipeline owns a private tuner instance per
search or study, feeds it the space, asks it for ``n_trials`` parameter sets and tells it each
result. A stream follows the same :class:`~nni_safs.method.optimizer.Optimizer` protocol as LAHC.
When the inner tuner cannot answer yet (Evolution before its population has been evaluated),
the stream says "wait" rather than failing.

On resume the inner tuner is rebuilt and the finished (parameters, value) history replayed
into it, so no evaluation is repeated; its future suggestions may differ from the ones the
lost instance would have made.
"""
from __future__ import annotations

import logging
from typing import Any

from nni import NoMoreTrialError
from nni.tools.package_utils.tuner_factory import create_builtin_class_instance

from nni_safs import borrowed
from nni_safs.method.state import LogView, assemble

_logger = logging.getLogger(__name__)

# Builtin names whose constructor takes optimize_mode (all of NNI's HPO tuners but GridSearch).
_NO_OPTIMIZE_MODE = {"gridsearch"}


def builtin_tuner_names() -> list[str]:
    """Every built-in tuner NNI 3.0 registers, lower case."""
    return borrowed.builtin_tuner_names()


def check_tuner_name(name: str) -> str:
    """``name`` when NNI has a built-in tuner of that name; a ValueError listing them otherwise."""
    if name.lower() not in builtin_tuner_names():
        raise ValueError(f"unknown NNI tuner {name!r}; valid builtin names: {', '.join(builtin_tuner_names())}")
    return name


def create_tuner(name: str, seed: int | None = None, budget: int | None = None):
    """An NNI built-in tuner that maximizes (NNI's TPE would minimize by default).

    The random start is sized to the ``budget``: NNI's defaults (TPE's 20 random
    ``n_startup_jobs``, Evolution's population of 32) would make a 20-trial study pure random
    search. TPE starts with a fifth of the budget at random (at least 2), Evolution's
    population is a quarter of it.
    """
    check_tuner_name(name)
    args: dict[str, Any] = {} if name.lower() in _NO_OPTIMIZE_MODE else {"optimize_mode": "maximize"}
    if seed is not None and name.lower() in ("tpe", "random", "anneal"):
        args["seed"] = seed
    if budget is not None and name.lower() == "evolution":
        args["population_size"] = max(2, budget // 4)
    if budget is not None and name.lower() == "tpe":
        args["tpe_args"] = {"n_startup_jobs": startup_trials(budget)}
    return create_builtin_class_instance(name, args, "tuners")


def startup_trials(budget: int) -> int:
    """Random suggestions before a model-based tuner (TPE) takes over: a fifth, at least 2."""
    return max(2, budget // 5)


class TunerStream:
    """``n_trials`` suggestions of an NNI tuner over ``space``, as ask/tell."""

    def __init__(self, tuner_name: str, space: dict, n_trials: int, seed: int = 0,
                 history: list[dict] | None = None, prior: list[dict] | None = None,
                 first: list[dict] | None = None) -> None:
        """``prior``: finished ``{"params", "value"}`` records of a related study, fed to the inner
        tuner as observations before its first suggestion (they are not this study's trials and
        never its best). ``first``: parameters this study evaluates before asking the tuner
        (e.g. the default configuration, as SMAC's initial design does); their results reach the
        tuner as observations."""
        self.tuner_name, self.space, self.n_trials, self.seed = tuner_name, space, n_trials, seed
        self.first = [dict(p) for p in first or []]
        self.prior = [{"params": r["params"], "value": r["value"]} for r in prior or []]
        self.tuner = create_tuner(tuner_name, seed, n_trials)
        self.tuner.update_search_space(space)
        self._observe(self.prior)
        self.asked: dict[int, dict] = {}  # stream-local id -> parameters, not yet told
        self.history: list[dict] = []  # {"id", "params", "value"} of told results
        self.next_id = 0
        self._live: set[int] = set()  # ids this tuner instance generated itself
        for record in history or []:
            self.next_id = max(self.next_id, record["id"] + 1)
        self.history = list(history or [])
        self._observe(self.history)

    @property
    def pending(self) -> int:
        return len(self.asked)

    @property
    def exhausted(self) -> bool:
        """Every trial of the budget has been asked for."""
        return self.next_id >= self.n_trials

    @property
    def finished(self) -> bool:
        return self.exhausted and not self.asked

    def ask(self) -> tuple[int, dict] | None:
        if self.exhausted:
            return None
        if self.next_id < len(self.first):
            key = self.next_id
            self.next_id += 1
            self.asked[key] = self.first[key]
            return key, self.first[key]
        try:
            params = self.tuner.generate_parameters(self.next_id)
        except NoMoreTrialError:  # a space smaller than the budget, fully explored: the study ends here
            _logger.info("%s explored the whole space after %d trials", self.tuner_name, self.next_id)
            self.n_trials = self.next_id
            return None
        except RuntimeError as err:  # Evolution: "The population is empty" until results arrive
            if not (self.asked and str(err) == "The population is empty"):
                raise  # anything else is a failure (the SAFS tuner stops with it), not a wait
            _logger.debug("%s cannot suggest yet (%s); waiting for results", self.tuner_name, err)
            return None
        key = self.next_id
        self.next_id += 1
        self.asked[key] = params
        self._live.add(key)
        return key, params

    def tell(self, key: int, value: float) -> None:
        if key not in self.asked:
            raise KeyError(f"{self.tuner_name} stream never asked for id {key} (or it was already told)")
        params = self.asked.pop(key)
        self.history.append({"id": key, "params": params, "value": value})
        if key in self._live:
            self.tuner.receive_trial_result(key, params, value)
        else:  # a first trial, or one asked by the instance that ran before a resume
            self._observe([{"params": params, "value": value}])

    def _observe(self, records: list[dict]) -> None:
        """Results the inner tuner did not suggest itself (a resume, a prior, a first trial)."""
        if records:
            self.tuner.import_data([{"parameter": r["params"], "value": r["value"]} for r in records])

    @property
    def best(self) -> tuple[dict, float] | None:
        """(params, value) of the best told trial; None while none has scored above 0 (all failed)."""
        record = max((r for r in self.history if r["value"] > 0), key=lambda r: r["value"], default=None)
        return None if record is None else (record["params"], record["value"])

    @property
    def bounds(self) -> tuple[int, int]:
        """(fewest, most) evaluations the stream asks for (fewer when the space is smaller)."""
        return self.n_trials, self.n_trials

    def state_dict(self) -> dict:
        """JSON-ready; asked-but-untold ids are kept so their results can still be told."""
        return assemble(self.state_head(), self.state_logs())

    def state_head(self) -> dict:
        """The state but the history (see :mod:`nni_safs.storage.journal`)."""
        return {"tuner_name": self.tuner_name, "space": self.space, "n_trials": self.n_trials,
                "seed": self.seed, "prior": self.prior, "first": self.first, "next_id": self.next_id,
                "asked": {str(k): v for k, v in self.asked.items()}}

    def state_logs(self) -> dict[str, LogView]:
        return {"history": LogView(self.history)}

    @classmethod
    def from_state_dict(cls, state: dict) -> "TunerStream":
        stream = cls(state["tuner_name"], state["space"], state["n_trials"], state["seed"], state["history"],
                     state.get("prior"), state.get("first"))
        stream.next_id = state["next_id"]
        stream.asked = {int(k): v for k, v in state["asked"].items()}
        return stream
