import copy
import json
import math
import random

import pytest

from nni_safs.method.lahc import Candidate, LahcArguments, LateAcceptanceHillClimbing, lahc_accept

SLOTS = [f"layer{i}" for i in range(6)]
OPS = ["relu", "swish", "gelu", "elu", "tanh", "srs"]


def genome_fitness(genome):
    """Deterministic, genome-dependent fitness (percent) with plateaus, so runs stop early."""
    return 40.0 + sum((i + 1) * (OPS.index(op) % 3) for i, op in enumerate(genome.values()))


def run_sequential(opt, fitness_of_id):
    while (c := opt.ask()) is not None:
        opt.tell(c.id, fitness_of_id(c.id))
    return opt


def run_batched(opt, order, batch=4):
    """Ask up to `batch`, tell them in the permuted order `order(ids)`, repeat until done."""
    while True:
        asked = []
        while len(asked) < batch and (c := opt.ask()) is not None:
            asked.append(c)
        if not asked:
            return opt
        by_id = {c.id: c for c in asked}
        for i in order([c.id for c in asked]):
            opt.tell(i, genome_fitness(by_id[i].genome))


@pytest.mark.parametrize("new,current,hist,expected", [
    (1.0, 5.0, 2.0, True),    # better than both
    (1.9, 1.0, 2.0, True),    # worse than current but strictly better than history: late acceptance
    (2.0, 1.0, 2.0, False),   # equal to history is not enough
    (1.0, 1.0, 0.5, True),    # equal to current: accept sideways moves
    (3.0, 2.0, 2.5, False),   # worse than both
    (math.inf, 1.0, 2.0, False),
    (math.inf, math.inf, math.inf, True),  # nothing finite yet: sideways
])
def test_lahc_accept_truth_table(new, current, hist, expected):
    assert lahc_accept(new, current, hist) is expected


def test_hand_worked_sequence():
    # L = 3; energy E = 1/f. Step k compares with hist[k % 3].
    # id f     E      vs hist[k%3] / current           accepted  history after
    # 0  50    1/50   (s0)                              True      [1/50, 1/50, 1/50]
    # 1  40    1/40   k0: !<1/50 (h0), !<=1/50 (cur)    False     unchanged
    # 2  60    1/60   k1: <1/50 (h1) -> write           True      [1/50, 1/60, 1/50]   best
    # 3  55    1/55   k2: <1/50 (h2) -> write           True      [1/50, 1/60, 1/55]   (worse than cur 1/60)
    # 4  52    1/52   k3: <1/50 (h0) -> write           True      [1/52, 1/60, 1/55]   (cur now 1/52)
    # 5  51    1/51   k4: !<1/60 (h1), !<=1/52          False     unchanged
    # 6  52    1/52   k5: !<1/55 (h2), ==1/52 cur       True      unchanged (not strictly < hist)
    # 7  None  inf    k6: failed                        False     unchanged
    # 8  70    1/70   k7: <1/60 (h1) -> write           True      [1/52, 1/70, 1/55]   best
    fits = [50, 40, 60, 55, 52, 51, 52, None, 70]
    opt = LateAcceptanceHillClimbing(SLOTS, OPS, LahcArguments(history=3, min_steps=50, max_steps=50), seed=3)
    genomes = {}
    for f in fits:
        c = opt.ask()
        genomes[c.id] = c.genome
        opt.tell(c.id, f)
    assert [e["accepted"] for e in opt.trace] == [True, False, True, True, True, False, True, False, True]
    assert [e["improved_best"] for e in opt.trace] == [True, False, True, False, False, False, False, False,
                                                       True]
    h0 = [1 / 50] * 3
    h2 = [1 / 50, 1 / 60, 1 / 50]
    h3 = [1 / 50, 1 / 60, 1 / 55]
    h4 = [1 / 52, 1 / 60, 1 / 55]
    h8 = [1 / 52, 1 / 70, 1 / 55]
    assert [e["history"] for e in opt.trace] == [h0, h0, h2, h3, h4, h4, h4, h4, h8]
    assert [e["id"] for e in opt.trace] == list(range(9))
    assert opt.trace[7]["energy"] == math.inf and opt.trace[7]["fitness"] is None
    assert not any(e["discarded"] for e in opt.trace)
    assert opt.best == (genomes[8], 70.0)
    assert opt.current == genomes[8]
    assert not opt.finished and opt.steps == 8


def test_neighbours_are_moves_of_the_current_genome():
    opt = LateAcceptanceHillClimbing(SLOTS, OPS, LahcArguments(min_steps=100, max_steps=100), seed=1)
    s0 = opt.ask().genome
    assert set(s0) == set(SLOTS) and set(s0.values()) <= set(OPS)
    opt.tell(0, 50.0)
    changed = []
    for _ in range(100):
        before = opt.current
        c = opt.ask()
        assert list(c.genome) == SLOTS and set(c.genome.values()) <= set(OPS)
        diff = sum(before[s] != c.genome[s] for s in SLOTS)
        assert diff <= 3
        changed.append(diff)
        opt.tell(c.id, genome_fitness(c.genome))
    assert max(changed) == 3  # mutation + swap really happen


def test_single_slot_and_single_op_spaces():
    one = LateAcceptanceHillClimbing(["only"], OPS, seed=0)
    run_sequential(one, lambda i: 50.0)
    assert one.finished and all(list(e["genome"]) == ["only"] for e in one.trace)
    same = LateAcceptanceHillClimbing(SLOTS, ["relu"], seed=0)
    run_sequential(same, lambda i: 50.0)
    assert all(set(e["genome"].values()) == {"relu"} for e in same.trace)


def test_constant_fitness_stops_right_after_min_steps():
    """As the `lahc` package the reference uses: it stops once step > steps_minimum."""
    opt = run_sequential(LateAcceptanceHillClimbing(SLOTS, OPS, seed=0), lambda i: 50.0)
    assert opt.finished and opt.steps == 21 and len(opt.trace) == 22
    assert all(e["accepted"] for e in opt.trace)  # sideways moves are accepted
    assert opt.ask() is None and opt.pending == 0
    opt = run_sequential(LateAcceptanceHillClimbing(SLOTS, OPS, LahcArguments(min_steps=7), seed=0), lambda i: 1)
    assert opt.steps == 8 and len(opt.trace) == 9


def test_idle_fraction_needs_more_idle_steps_than_the_fraction():
    # ids 1..30 (steps 0..29) improve, then flat: with idle_fraction 0.25, stop at the first n with idle > n/4,
    # i.e. idle = n - 30 > n / 4  <=>  n > 40  -> 41 steps.
    args = LahcArguments(min_steps=20, idle_fraction=0.25, max_steps=100)
    opt = run_sequential(LateAcceptanceHillClimbing(SLOTS, OPS, args), lambda i: 10.0 + min(i, 30))
    assert opt.finished and opt.steps == 41


def test_always_improving_runs_to_max_steps():
    args = LahcArguments(min_steps=5, max_steps=30)
    opt = run_sequential(LateAcceptanceHillClimbing(SLOTS, OPS, args), lambda i: 10.0 + i)
    assert opt.finished and opt.steps == 30 and len(opt.trace) == 31
    assert opt.best[1] == 40.0
    assert all(e["improved_best"] for e in opt.trace)


def test_ask_never_exceeds_max_steps_and_reports_waiting():
    opt = LateAcceptanceHillClimbing(SLOTS, OPS, LahcArguments(min_steps=3, max_steps=5))
    asked = [opt.ask() for _ in range(10)]
    assert [c.id for c in asked[:6]] == list(range(6)) and asked[6:] == [None] * 4
    assert opt.pending == 6 and not opt.finished
    for c in asked[:6]:
        opt.tell(c.id, 50.0 + c.id)
    assert opt.finished and opt.pending == 0 and opt.steps == 5


def test_out_of_order_results_wait_for_earlier_ones():
    opt = LateAcceptanceHillClimbing(SLOTS, OPS)
    cands = [opt.ask() for _ in range(4)]
    opt.tell(2, 60.0)
    opt.tell(3, 70.0)
    assert opt.trace == [] and opt.pending == 2 and opt.best is None
    opt.tell(0, 50.0)
    assert [e["id"] for e in opt.trace] == [0]
    opt.tell(1, 40.0)
    assert [e["id"] for e in opt.trace] == [0, 1, 2, 3] and opt.pending == 0
    assert opt.best == (cands[3].genome, 70.0)


@pytest.mark.parametrize("order_seed", range(5))
def test_arrival_order_does_not_change_the_outcome(order_seed):
    args = LahcArguments(min_steps=10, max_steps=40)
    in_order = run_batched(LateAcceptanceHillClimbing(SLOTS, OPS, args, seed=7), lambda ids: ids)
    rng = random.Random(order_seed)
    shuffled = run_batched(LateAcceptanceHillClimbing(SLOTS, OPS, args, seed=7),
                           lambda ids: rng.sample(ids, len(ids)))
    reverse = run_batched(LateAcceptanceHillClimbing(SLOTS, OPS, args, seed=7), lambda ids: ids[::-1])
    folded = [e for e in in_order.trace if not e["discarded"]]
    for other in (shuffled, reverse):
        assert [e for e in other.trace if not e["discarded"]] == folded
        assert sorted(e["id"] for e in other.trace if e["discarded"]) == \
            sorted(e["id"] for e in in_order.trace if e["discarded"])
        assert other.best == in_order.best and other.finished
    assert in_order.finished and len(folded) >= 11


def test_results_after_finish_are_discarded():
    args = LahcArguments(min_steps=3, max_steps=10)
    opt = LateAcceptanceHillClimbing(SLOTS, OPS, args)
    cands = [opt.ask() for _ in range(7)]
    opt.tell(5, 99.0)  # buffered, then discarded when the search stops after step 4 (id 4): step > min_steps
    for i in range(5):
        opt.tell(i, 50.0)
    assert opt.finished and opt.ask() is None
    assert opt.pending == 1  # id 6 still in flight
    opt.tell(6, 98.0)
    assert opt.pending == 0 and opt.ask() is None
    assert [(e["id"], e["discarded"]) for e in opt.trace] == [
        (0, False), (1, False), (2, False), (3, False), (4, False), (5, True), (6, True)]
    assert opt.best == (cands[0].genome, 50.0)  # discarded results never count
    assert all(not e["accepted"] for e in opt.trace if e["discarded"])
    with pytest.raises(ValueError, match="already told"):
        opt.tell(4, 1.0)


def test_unknown_and_repeated_ids_are_refused():
    opt = LateAcceptanceHillClimbing(SLOTS, OPS)
    opt.ask()
    opt.ask()
    with pytest.raises(ValueError, match="never asked"):
        opt.tell(2, 50.0)
    with pytest.raises(ValueError, match="never asked"):
        opt.tell(-1, 50.0)
    opt.tell(1, 50.0)
    with pytest.raises(ValueError, match="already told"):
        opt.tell(1, 50.0)  # buffered
    opt.tell(0, 50.0)
    with pytest.raises(ValueError, match="already told"):
        opt.tell(0, 50.0)  # folded


def test_failed_evaluations_are_never_accepted_over_a_finite_current():
    opt = LateAcceptanceHillClimbing(SLOTS, OPS, LahcArguments(min_steps=10, max_steps=10))
    s0 = opt.ask()
    opt.tell(s0.id, 50.0)
    for bad in (None, float("nan"), 0.0, -3.0, float("inf"), None):
        c = opt.ask()
        opt.tell(c.id, bad)
    steps = opt.trace[1:]
    assert all(e["energy"] == math.inf and not e["accepted"] and not e["improved_best"] for e in steps)
    assert [e["fitness"] for e in steps] == [None, None, 0.0, -3.0, None, None]
    assert all(e["history"] == [1 / 50] * 3 for e in steps)
    assert opt.current == s0.genome and opt.best == (s0.genome, 50.0)


def test_a_failed_initial_state_is_replaced_by_the_first_success():
    opt = LateAcceptanceHillClimbing(SLOTS, OPS)
    opt.tell(opt.ask().id, None)
    assert opt.best is None and opt.trace[0]["history"] == [math.inf] * 3
    c = opt.ask()
    opt.tell(c.id, 30.0)
    assert opt.trace[1]["accepted"] and opt.trace[1]["improved_best"]
    assert opt.best == (c.genome, 30.0) and opt.current == c.genome
    assert opt.trace[1]["history"] == [1 / 30, math.inf, math.inf]


def drive(opt, in_flight=3):
    """Keep `in_flight` candidates out and tell the second-oldest first, so results arrive out of order."""
    out, asked = [], []
    while True:
        while opt.pending < in_flight and (c := opt.ask()) is not None:
            out.append(c)
            asked.append((c.id, c.genome))
        if not out:
            return asked
        c = out.pop(1 if len(out) > 1 else 0)
        opt.tell(c.id, genome_fitness(c.genome))


def test_state_dict_roundtrip_mid_search_continues_identically():
    args = LahcArguments(history=4, min_steps=15, max_steps=60)
    original = LateAcceptanceHillClimbing(SLOTS, OPS, args, seed=11)
    cands = [original.ask() for _ in range(6)]
    for c in (cands[0], cands[1], cands[4]):  # 0, 1 folded; 4 buffered; 2, 3, 5 in flight
        original.tell(c.id, genome_fitness(c.genome))
    twin = copy.deepcopy(original)
    restored = LateAcceptanceHillClimbing.from_state_dict(json.loads(json.dumps(original.state_dict())))
    assert restored.pending == original.pending == 3
    assert restored.state_dict() == original.state_dict()
    for opt in (twin, restored):
        for c in (cands[5], cands[2], cands[3]):
            opt.tell(c.id, genome_fitness(c.genome))
    asked_twin, asked_restored = drive(twin), drive(restored)
    assert asked_restored == asked_twin and len(asked_twin) > 0
    assert restored.trace == twin.trace and restored.best == twin.best
    assert restored.finished and twin.finished


def test_state_dict_is_strict_json_with_infinite_energies():
    opt = LateAcceptanceHillClimbing(SLOTS, OPS)
    opt.tell(opt.ask().id, None)
    c = opt.ask()
    opt.tell(c.id, float("nan"))
    text = json.dumps(opt.state_dict(), allow_nan=False)
    restored = LateAcceptanceHillClimbing.from_state_dict(json.loads(text))
    assert restored.trace == opt.trace and restored.current == opt.current
    with pytest.raises(ValueError, match="version"):
        LateAcceptanceHillClimbing.from_state_dict({**opt.state_dict(), "version": 99})


def test_same_seed_same_run_different_seed_different_start():
    a = drive(LateAcceptanceHillClimbing(SLOTS, OPS, seed=5))
    b = drive(LateAcceptanceHillClimbing(SLOTS, OPS, seed=5))
    c = drive(LateAcceptanceHillClimbing(SLOTS, OPS, seed=6))
    assert a == b and a != c
    assert isinstance(LateAcceptanceHillClimbing(SLOTS, OPS).ask(), Candidate)


@pytest.mark.parametrize("kwargs,field", [
    ({"history": 0}, "history"),
    ({"history": 2.5}, "history"),
    ({"min_steps": 0}, "min_steps"),
    ({"min_steps": 30, "max_steps": 20}, "max_steps"),
    ({"idle_fraction": -0.1}, "idle_fraction"),
    ({"idle_fraction": 1.0}, "idle_fraction"),
    ({"idle_fraction": float("nan")}, "idle_fraction"),
])
def test_invalid_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        LahcArguments(**kwargs)


def test_invalid_search_space():
    with pytest.raises(ValueError, match="slots"):
        LateAcceptanceHillClimbing([], OPS)
    with pytest.raises(ValueError, match="choices"):
        LateAcceptanceHillClimbing(SLOTS, [])
    with pytest.raises(ValueError, match="unique"):
        LateAcceptanceHillClimbing(["a", "a"], OPS)


def test_history_and_idle_follow_the_reference_lahc_package():
    # Gunnstein/lahc (what the SAFS reference runs): the idle count resets when the candidate
    # beats the current state, and after every step hist[k % L] takes the current energy when lower
    # id f   E     slot  decision                     idle  history after
    # 0  50  1/50   -    start                        0     [1/50, 1/50, 1/50]
    # 1  60  1/60   0    accept (best)                0     [1/60, 1/50, 1/50]
    # 2  55  1/55   1    accept (< hist 1/50)         1     [1/60, 1/55, 1/50]
    # 3  57  1/57   2    accept, beats current 1/55   0     [1/60, 1/55, 1/57]
    # 4  45  1/45   0    reject                       1     [1/60, 1/55, 1/57]
    # 5  45  1/45   1    reject; current 1/57 < 1/55  2     [1/60, 1/57, 1/57]
    opt = LateAcceptanceHillClimbing(SLOTS, OPS, LahcArguments(history=3, min_steps=50, max_steps=50), seed=3)
    for f in [50, 60, 55, 57, 45, 45]:
        opt.tell(opt.ask().id, f)
    assert [e["idle"] for e in opt.trace] == [0, 0, 1, 0, 1, 2]
    assert [e["accepted"] for e in opt.trace] == [True, True, True, True, False, False]
    assert opt.trace[-1]["history"] == pytest.approx([1 / 60, 1 / 57, 1 / 57])


def test_initial_genomes_are_all_evaluated_and_the_best_starts_the_search():
    uniform = [{slot: op for slot in SLOTS} for op in OPS]
    opt = LateAcceptanceHillClimbing(SLOTS, OPS, LahcArguments(history=3, min_steps=5, max_steps=10), seed=1,
                                     initial=uniform)
    asked = [opt.ask() for _ in range(len(OPS))]
    assert [c.genome for c in asked] == uniform
    assert opt.ask() is None  # the start is the best initial genome: known once all are folded
    scores = {"relu": 40, "swish": 45, "gelu": 70, "elu": 50, "tanh": 30, "srs": 35}
    for c in reversed(asked):  # arrival order does not matter
        opt.tell(c.id, scores[c.genome[SLOTS[0]]])
    assert opt.current == uniform[OPS.index("gelu")]
    assert opt.best == (uniform[OPS.index("gelu")], 70)
    assert opt.trace[-1]["history"] == [1 / 70] * 3 and opt.steps == 0
    step = opt.ask()
    assert step.id == len(OPS) and sum(a != b for a, b in zip(step.genome.values(), opt.current.values())) <= 3
    restored = LateAcceptanceHillClimbing.from_state_dict(json.loads(json.dumps(opt.state_dict())))
    assert restored.state_dict() == opt.state_dict()
