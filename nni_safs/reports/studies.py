"""The stage-2 studies of a finished run: their trials, and which hyperparameters mattered.

Importance is Optuna's fANOVA (``optuna.importance.FanovaImportanceEvaluator``: a random forest
fitted to the trials, each hyperparameter's share of the score's variance), fed the run's recorded
trials through ``optuna.trial.create_trial``; nothing is re-run. The studies' own space file may be
gone (another machine, a deleted checkout), so each hyperparameter's range is the range its trials
took: a number on a log scale when every value is positive (learning rates and weight decays span
decades), anything else as a categorical. A hyperparameter that kept one value in a study cannot
have mattered there and is left out; one that only some trials have (a conditional one, such as
``momentum`` under ``sgd``) is left out by Optuna.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

from nni_safs.method.contract import OWN_ACTIVATION, SAFS, Stage, Status, rung_variant

TITLES = {OWN_ACTIVATION: "stage 2: the model's own activation, hyperparameters tuned",
          SAFS: "SAFS: stage 1's activations, hyperparameters tuned"}


@dataclass(frozen=True)
class StudyTrial:
    """One trial of a stage-2 study as the run recorded it."""

    job: int
    hparams: dict[str, Any]
    score: float | None  # validation top-1 (%) (a diverged trial's best epoch); None when it failed or was lost
    status: str


def study_trials(summary: Mapping[str, Any], variant: str) -> list[StudyTrial]:
    """The trials of study ``variant`` (one of :data:`~nni_safs.method.contract.STUDIES`) in the
    order they were issued; with ``hpo_promotion``, those of its lowest rung (the one budget every
    set is measured at, and the scores its tuner was told)."""
    trials = []
    for job in summary.get("jobs", []):
        if job.get("stage") != Stage.HPO.value or job.get("variant") not in (variant, rung_variant(variant, 0)):
            continue
        result = job.get("result") or {}
        score = result.get("default")
        usable = result.get("status") in (Status.OK.value, Status.DIVERGED.value) and isinstance(score, (int, float)) and math.isfinite(score)
        trials.append(StudyTrial(job["job"], dict(job.get("hparams") or {}), float(score) if usable else None,
                                 result.get("status", "not run")))
    return trials


def param_importances(trials: Sequence[StudyTrial], seed: int = 0) -> dict[str, float]:
    """Each varied hyperparameter's fANOVA importance (they sum to 1), largest first.

    Raises:
        ValueError: saying why none can be computed (fewer than two scored trials, nothing varied).
    """
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    scored = [trial for trial in trials if trial.score is not None]
    if len(scored) < 2:
        raise ValueError(f"{len(scored)} trial(s) with a score: importance needs at least 2")
    distributions = {}
    for key in sorted({key for trial in scored for key in trial.hparams}):
        values = [trial.hparams[key] for trial in scored if key in trial.hparams]
        if len({repr(value) for value in values}) < 2:
            continue
        if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
            distributions[key] = FloatDistribution(min(values), max(values), log=min(values) > 0)
        else:
            distributions[key] = CategoricalDistribution(sorted(set(values), key=repr))
    if not distributions:
        raise ValueError("every scored trial had the same hyperparameters: nothing varied")
    with _quiet(optuna):
        study = optuna.create_study(direction="maximize")
        study.add_trials([optuna.trial.create_trial(
            params={key: _value(trial.hparams[key], distributions[key]) for key in distributions if key in trial.hparams},
            distributions={key: dist for key, dist in distributions.items() if key in trial.hparams},
            value=trial.score) for trial in scored])
        try:
            found = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))
        except RuntimeError as err:  # e.g. no hyperparameter common to every scored trial
            raise ValueError(str(err)) from None
    if not found:
        raise ValueError("no hyperparameter varied in every scored trial")
    return {key: float(value) for key, value in found.items()}


def _value(value: Any, distribution: Any) -> Any:
    from optuna.distributions import FloatDistribution
    return float(value) if isinstance(distribution, FloatDistribution) else value


@contextmanager
def _quiet(optuna: Any) -> Iterator[None]:
    """No "A new study created" lines from a study that only computes importance."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)
