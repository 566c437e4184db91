"""Stage 1's confirmation rules as plain functions of scores: which genomes it re-scores, which go
on after the first seed, and which wins. The pipeline applies them to its jobs;
``benchmarks/studies/confirm_rules.py`` applies them to finished workspaces to compare settings.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from nni_safs.method.genomes import genome_from_string


def one_op(genome: str) -> bool:
    """Every slot the same op (a genome of the uniform start)."""
    return len(set(genome_from_string(genome).values())) == 1


def candidates(ranked: Sequence[str], own: str, top: int, uniform: int) -> list[str]:
    """The own activation, the search's ``top`` best others, then those of its best ``uniform``
    one-op genomes not among them. ``ranked``: the search's genomes, best first. The 8-epoch score
    favours genomes that start fast; at the final budget the best one-op genome often wins
    (``benchmarks/studies/results/confirm_uniform_selection.md``)."""
    others = [genome for genome in ranked if genome != own]
    best = others[:top]
    best_one_op = [genome for genome in others if one_op(genome)][:uniform]
    return [own] + best + [genome for genome in best_one_op if genome not in best]


def finalists(genomes: Sequence[str], first: Mapping[str, float], keep: int | None) -> list[str]:
    """Successive halving: the own activation (``genomes[0]``) and the ``keep`` best others on the
    first seed's scores ``first`` go on to the other seeds (all with ``None``): a genome far behind
    after one final-budget run rarely wins on the mean. Ties keep the candidates' order."""
    if keep is None or keep >= len(genomes) - 1:
        return list(genomes)
    return [genomes[0]] + sorted(genomes[1:], key=lambda genome: -first[genome])[:keep]


def winner(scores: Mapping[str, Sequence[float]]) -> tuple[str, float]:
    """The best mean over the seeds; the first of equals, so the own activation (listed first) wins a tie."""
    means = {genome: sum(values) / len(values) for genome, values in scores.items()}
    best = max(means, key=lambda genome: means[genome])
    return best, means[best]
