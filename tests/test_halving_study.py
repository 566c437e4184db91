"""Stage 2's studies with successive halving (hpo_promotion: asha): NNI's TPE in-process, scripted scores."""
import json
import math
import random

import pytest

from nni_safs.integration.nni_tuners import TunerStream
from nni_safs.method.halving_study import HalvingStudy

SPACE = {"optimizer": {"_type": "choice", "_value": [
    {"_name": "adam", "lr": {"_type": "loguniform", "_value": [1e-4, 1e-1]},
     "weight_decay": {"_type": "uniform", "_value": [1e-5, 1e-2]}}]}}
RUNGS = (3, 10, 30)


def score(params, epochs):
    """Best near lr 1e-2, and every set gains with epochs (the ranking holds across rungs)."""
    lr = params["optimizer"]["lr"]
    return 60.0 - 10 * abs(math.log10(lr) + 2) + epochs / 3


def make(n_trials=9, seed=0):
    return HalvingStudy(TunerStream("TPE", SPACE, n_trials, seed), RUNGS, 3)


def run(study, concurrency, rng, fitness=None):
    """Keep ``concurrency`` sets in flight, finishing a random one each time; the ask log."""
    fitness = fitness or (lambda key, params: score(params, study.rungs[study.rung_of(key)]))
    running, log = [], []
    while not study.finished:
        while len(running) < concurrency and (asked := study.ask()) is not None:
            running.append(asked)
            log.append((asked[0], study.rung_of(asked[0]), json.dumps(asked[1], sort_keys=True)))
        assert running, "deadlock: nothing running and nothing to ask"
        key, params = running.pop(rng.randrange(len(running)))
        study.tell(key, fitness(key, params))
    assert study.ask() is None
    return log


def test_proposals_climb_the_rungs_and_the_best_is_the_top_rungs():
    study = make()
    log = run(study, 1, random.Random(0))
    rungs = [rung for _, rung, _ in log]
    assert rungs.count(0) == 9 and rungs.count(1) >= 3 and rungs.count(2) >= 1
    assert rungs[:4] == [0, 0, 0, 1]  # the third result promotes at once
    # each promoted set is one of the lowest rung's, and every rung's top third went up
    for rung in (0, 1):
        told = sorted((e for e in study.trace if e["rung"] == rung), key=lambda e: -e["fitness"])
        above = [e["params"] for e in study.trace if e["rung"] == rung + 1]
        assert all(e["params"] in above for e in told[:len(told) // 3])
    params, value = study.best
    top = [e for e in study.trace if e["rung"] == 2]
    assert value == max(e["fitness"] for e in top) and params in [e["params"] for e in top]
    assert study.bounds == (len(log), len(log)) and 9 <= len(log) <= 27


def test_the_tuner_is_told_each_proposals_lowest_rung_score_only():
    """The inner study's history (what TPE observed) is one entry per proposal, its lowest-rung
    score; results at higher rungs, however they differ, change none of TPE's proposals."""
    def proposals(upper):  # rung-0 proposals in order, and the best, with ``upper`` scoring the rungs above
        study = make(seed=3)
        run(study, 1, random.Random(0), lambda key, params: score(params, 3) if study.rung_of(key) == 0
            else upper(params, study.rungs[study.rung_of(key)]))
        return [e["params"] for e in study.trace if e["rung"] == 0], study.history, study.best[0]

    same, history, best = proposals(score)
    assert [(r["params"], r["value"]) for r in history] == [(p, score(p, 3)) for p in same]
    reversed_above, history_reversed, best_reversed = proposals(lambda params, epochs: 200 - score(params, epochs))
    assert reversed_above == same and history_reversed == history
    assert best_reversed != best  # the higher rungs did decide the study's best


@pytest.mark.parametrize("concurrency", [2, 4])
def test_in_parallel_no_slot_waits_at_a_rung_boundary(concurrency):
    study, rng, running, idle = make(n_trials=12), random.Random(concurrency), [], 0
    while not study.finished:
        while len(running) < concurrency and (asked := study.ask()) is not None:
            running.append(asked)
        if len(running) < concurrency and study.started < study.n_trials:
            idle += 1
        key, params = running.pop(rng.randrange(len(running)))
        study.tell(key, score(params, study.rungs[study.rung_of(key)]))
    assert idle == 0
    assert [sum(e["rung"] == r for e in study.trace) for r in range(3)][0] == 12
    assert len(study.history) == 12


def test_failed_sets_are_never_promoted_and_the_tuner_sees_their_zero():
    study = make()
    failing = lambda key, params: 0.0 if params["optimizer"]["lr"] > 1e-2 else score(  # noqa: E731
        params, study.rungs[study.rung_of(key)])
    run(study, 3, random.Random(2), failing)
    assert all(e["fitness"] is None for e in study.trace if e["params"]["optimizer"]["lr"] > 1e-2)
    assert not any(e["params"]["optimizer"]["lr"] > 1e-2 for e in study.trace if e["rung"] > 0)
    assert sorted(r["value"] == 0.0 for r in study.history) == sorted(
        e["fitness"] is None for e in study.trace if e["rung"] == 0)


@pytest.mark.parametrize("cut", [2, 7, 12])
def test_a_restored_study_repeats_no_evaluation(cut):
    """Saved after ``cut`` results with sets in flight and restored from its JSON (the tuner rebuilt
    from its history), the sets in flight report afterwards and no (set, rung) runs twice."""
    study, rng, running, log = make(n_trials=12), random.Random(5), [], []
    for _ in range(cut):
        while len(running) < 3 and (asked := study.ask()) is not None:
            running.append(asked)
            log.append((study.rung_of(asked[0]), json.dumps(asked[1], sort_keys=True)))
        key, params = running.pop(rng.randrange(len(running)))
        study.tell(key, score(params, study.rungs[study.rung_of(key)]))
    assert running and not study.finished
    state = json.loads(json.dumps(study.state_dict()))
    restored = HalvingStudy.from_state_dict(state, TunerStream.from_state_dict)
    assert restored.pending == len(running) and restored.trace == study.trace
    while not restored.finished:
        while len(running) < 3 and (asked := restored.ask()) is not None:
            running.append(asked)
            log.append((restored.rung_of(asked[0]), json.dumps(asked[1], sort_keys=True)))
        key, params = running.pop(rng.randrange(len(running)))
        restored.tell(key, score(params, restored.rungs[restored.rung_of(key)]))
    assert len(log) == len(set(log)) == len(restored.trace)
    assert len(restored.history) == 12 and sum(e["rung"] == 0 for e in restored.trace) == 12


def test_a_ladder_the_study_cannot_climb_is_refused():
    with pytest.raises(ValueError, match=r"n_trials must be >= 9 .*rungs \[3, 10, 30\].*got 8"):
        make(n_trials=8)
    with pytest.raises(ValueError, match="reduction_factor must be >= 2, got 1"):
        HalvingStudy(TunerStream("TPE", SPACE, 9, 0), RUNGS, 1)
