"""Asynchronous successive halving (stage 1's multi-fidelity search), driven with scripted scores."""
import json
import random

import pytest

from nni_safs.method.asha import AshaArguments, SuccessiveHalving, rung_epochs

SLOTS = [f"layer{i}" for i in range(4)]
OPS = ["relu", "swish", "gelu", "elu", "tanh", "srs"]
OWN = {slot: "relu" for slot in SLOTS}


def score(genome, epochs):
    """More 'swish' is better, and every genome gains with epochs (the ranking holds across rungs)."""
    return 40.0 + 5 * list(genome.values()).count("swish") + 3 * list(genome.values()).count("gelu") + epochs / 10


def run(opt, concurrency, rng, fitness=None):
    """Keep ``concurrency`` candidates in flight, finishing a random one each time; the ask log."""
    fitness = fitness or (lambda c: score(c.genome, opt.rungs[opt.rung_of(c.id)]))
    running, log = [], []
    while not opt.finished:
        while len(running) < concurrency and (c := opt.ask()) is not None:
            running.append(c)
            log.append((c.id, opt.rung_of(c.id), tuple(c.genome.values())))
        assert running, "deadlock: nothing running and nothing to ask"
        done = running.pop(rng.randrange(len(running)))
        opt.tell(done.id, fitness(done))
    assert opt.ask() is None
    return log


@pytest.mark.parametrize("low,high,factor,expected", [
    (3, 30, 3, (3, 10, 30)), (1, 30, 3, (1, 3, 10, 30)), (2, 8, 2, (2, 4, 8)), (8, 8, 3, (8,)), (5, 30, 3, (10, 30)),
])
def test_rungs_end_at_the_top_budget_each_a_factor_above_the_last(low, high, factor, expected):
    assert rung_epochs(low, high, factor) == expected


@pytest.mark.parametrize("kwargs,message", [
    ({"reduction_factor": 1}, "reduction_factor must be >= 2"),
    ({"min_epochs": 40}, "min_epochs (40) must be <= max_epochs (30)"),
    ({"genomes": 8}, "genomes must be >= 9"),
    ({"genomes": 0}, "genomes must be a positive int"),
])
def test_bad_arguments_are_rejected_with_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AshaArguments(**kwargs)


def test_sequential_run_is_successive_halving_with_the_anchor_at_the_top():
    """One at a time: each rung keeps its top third, promoted as soon as a third of the results
    so far is reached; the anchor is measured once, at the top rung only."""
    opt = SuccessiveHalving(SLOTS, OPS, AshaArguments(genomes=9, min_epochs=3, max_epochs=30), seed=1, anchors=[OWN])
    log = run(opt, 1, random.Random(0))
    rungs = [rung for _, rung, _ in log]
    assert log[0] == (0, 2, tuple(OWN.values()))  # the anchor first, at the top rung
    assert rungs.count(0) == 9 and rungs.count(1) >= 3 and rungs.count(2) >= 2
    # the third result of rung 0 promotes at once: no waiting for the rung to fill
    assert rungs[:5] == [2, 0, 0, 0, 1]
    # every genome of the final top third of each rung was promoted
    for rung in (0, 1):
        told = sorted((e for e in opt.trace if e["rung"] == rung), key=lambda e: -e["fitness"])
        above = {tuple(e["genome"].values()) for e in opt.trace if e["rung"] == rung + 1}
        assert all(tuple(e["genome"].values()) in above for e in told[:len(told) // 3])
    genome, fitness = opt.best
    top = [e for e in opt.trace if e["rung"] == 2]
    assert fitness == max(e["fitness"] for e in top) and genome in [e["genome"] for e in top]
    assert opt.bounds[0] <= len(log) <= opt.bounds[1]


@pytest.mark.parametrize("concurrency", [2, 4])
def test_in_parallel_no_slot_waits_for_a_rung_to_fill(concurrency):
    """With several in flight, ask() only returns None once every genome has started: promotions
    are decided on the results in so far (asynchronous), never at a rung boundary."""
    opt = SuccessiveHalving(SLOTS, OPS, AshaArguments(genomes=27, min_epochs=3, max_epochs=30), seed=2, anchors=[OWN])
    rng, running, idle_before_end = random.Random(concurrency), [], 0
    while not opt.finished:
        while len(running) < concurrency and (c := opt.ask()) is not None:
            running.append(c)
        if len(running) < concurrency and opt.started < opt.args.genomes:
            idle_before_end += 1
        done = running.pop(rng.randrange(len(running)))
        opt.tell(done.id, score(done.genome, opt.rungs[opt.rung_of(done.id)]))
    assert idle_before_end == 0
    counts = [sum(e["rung"] == r for e in opt.trace) for r in range(3)]
    assert counts[0] == 27 + 0 and counts[1] >= 9 and counts[2] >= 3 + 1  # the anchor is at the top
    assert opt.best[0] == max((e["genome"] for e in opt.trace if e["rung"] == 2),
                              key=lambda g: score(g, 30))


def test_the_initial_genomes_start_first_and_random_ones_do_not_repeat():
    uniform = [{slot: op for slot in SLOTS} for op in OPS]
    opt = SuccessiveHalving(SLOTS, OPS, AshaArguments(genomes=30, min_epochs=3, max_epochs=9), seed=0, initial=uniform)
    log = run(opt, 2, random.Random(1))
    started = [genome for _, rung, genome in log if rung == 0]
    assert started[:len(OPS)] == [tuple(g.values()) for g in uniform]
    assert len(set(started)) == len(started) == 30


def test_failed_evaluations_are_never_promoted_nor_best():
    opt = SuccessiveHalving(SLOTS, OPS, AshaArguments(genomes=9, min_epochs=3, max_epochs=9), seed=4)
    swish = lambda c: 0.0 if "swish" in c.genome.values() else score(c.genome, opt.rungs[opt.rung_of(c.id)])  # noqa: E731
    run(opt, 3, random.Random(2), fitness=swish)
    assert all(e["fitness"] is None for e in opt.trace if "swish" in e["genome"].values())
    assert not any("swish" in e["genome"].values() for e in opt.trace if e["rung"] == 1)
    assert "swish" not in opt.best[0].values()
    everything_fails = SuccessiveHalving(SLOTS, OPS, AshaArguments(genomes=3, min_epochs=3, max_epochs=9), seed=4)
    run(everything_fails, 2, random.Random(2), fitness=lambda c: float("nan"))
    assert everything_fails.finished and everything_fails.best is None
    assert {e["rung"] for e in everything_fails.trace} == {0}  # nothing promoted


def test_an_anchor_wins_a_tie_at_the_top():
    opt = SuccessiveHalving(SLOTS, OPS, AshaArguments(genomes=3, min_epochs=3, max_epochs=9), seed=5, anchors=[OWN])
    run(opt, 1, random.Random(0), fitness=lambda c: 70.0)
    assert opt.best == (OWN, 70.0)


def test_telling_twice_or_an_unknown_candidate_is_refused():
    opt = SuccessiveHalving(SLOTS, OPS, AshaArguments(genomes=3, min_epochs=3, max_epochs=9))
    c = opt.ask()
    opt.tell(c.id, 50.0)
    with pytest.raises(ValueError, match="already told"):
        opt.tell(c.id, 50.0)
    with pytest.raises(ValueError, match="never asked"):
        opt.tell(99, 50.0)


def _events(opt, rng, running, log, limit=10**6):
    """Up to ``limit`` results, three candidates in flight; ``running`` and ``log`` carry over."""
    for _ in range(limit):
        if opt.finished:
            return
        while len(running) < 3 and (c := opt.ask()) is not None:
            running.append(c)
            log.append((c.id, opt.rung_of(c.id), tuple(c.genome.values())))
        done = running.pop(rng.randrange(len(running)))
        opt.tell(done.id, score(done.genome, opt.rungs[opt.rung_of(done.id)]))


@pytest.mark.parametrize("cut", [1, 5, 12, 16])
def test_a_restored_state_continues_exactly_and_repeats_no_evaluation(cut):
    """Saved after ``cut`` results with candidates in flight and restored from its JSON (those in
    flight report afterwards), it asks and decides what the uninterrupted run does."""
    def make():
        return SuccessiveHalving(SLOTS, OPS, AshaArguments(genomes=12, min_epochs=1, max_epochs=9), seed=7,
                                 initial=[{slot: "gelu" for slot in SLOTS}], anchors=[OWN])

    whole, whole_log = make(), []
    _events(whole, random.Random(3), [], whole_log)

    first, rng, running, log = make(), random.Random(3), [], []
    _events(first, rng, running, log, limit=cut)
    assert running and not first.finished
    restored = SuccessiveHalving.from_state_dict(json.loads(json.dumps(first.state_dict())))
    assert restored.pending == len(running)
    _events(restored, rng, running, log)
    assert log == whole_log and restored.trace == whole.trace and restored.best == whole.best
    asked = [(rung, genome) for _, rung, genome in log]
    assert len(asked) == len(set(asked))  # no genome evaluated twice at a rung
