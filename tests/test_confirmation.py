"""Stage 1's confirmation rules on their own (the pipeline tests drive them through jobs)."""
from nni_safs.method.confirmation import candidates, finalists, one_op, winner

OWN, ACON, ELU = "a=relu;b=relu", "a=acon;b=acon", "a=elu;b=elu"
MIXED, MIXED2 = "a=symexp;b=acon", "a=acon;b=elu"


def test_one_op_means_every_slot_the_same_op():
    assert one_op(ACON) and one_op("a=tanh") and not one_op(MIXED)


def test_candidates_add_the_best_one_op_genome_only_where_the_top_lacks_it():
    ranked = [MIXED, OWN, MIXED2, ACON, ELU]  # the search's order, best first; the own activation skipped
    assert candidates(ranked, OWN, top=1, uniform=1) == [OWN, MIXED, ACON]
    assert candidates(ranked, OWN, top=3, uniform=1) == [OWN, MIXED, MIXED2, ACON]  # already among the top
    assert candidates(ranked, OWN, top=1, uniform=2) == [OWN, MIXED, ACON, ELU]
    assert candidates(ranked, OWN, top=0, uniform=1) == [OWN, ACON]
    assert candidates(ranked, OWN, top=2, uniform=0) == [OWN, MIXED, MIXED2]
    assert candidates([MIXED], OWN, top=1, uniform=1) == [OWN, MIXED]  # no one-op genome measured


def test_finalists_keep_the_own_activation_and_the_first_seeds_best():
    genomes = [OWN, MIXED, ACON, MIXED2]
    first = {OWN: 90.0, MIXED: 80.0, ACON: 85.0, MIXED2: 85.0}
    assert finalists(genomes, first, 1) == [OWN, ACON]  # a tie keeps the candidates' order
    assert finalists(genomes, first, 2) == [OWN, ACON, MIXED2]
    assert finalists(genomes, first, None) == genomes == finalists(genomes, {}, 3)


def test_the_winner_is_the_best_mean_and_the_own_activation_wins_a_tie():
    assert winner({OWN: [80.0, 82.0], ACON: [79.0, 84.0]}) == (ACON, 81.5)
    assert winner({OWN: [81.0, 81.0], ACON: [80.0, 82.0]}) == (OWN, 81.0)
