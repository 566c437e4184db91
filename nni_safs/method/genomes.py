"""A genome (slot name -> op name) and its text form, the one a job's parameters carry.

Op names are checked where a genome is applied to a model
(:func:`nni_safs.models.activations.apply_genome`), the one place that knows the catalog.
"""
from __future__ import annotations

from typing import Mapping

Genome = dict[str, str]


def genome_to_string(genome: Mapping[str, str]) -> str:
    """Readable, order-preserving form: ``slot=op`` pairs joined by ``;``."""
    return ";".join(f"{slot}={op}" for slot, op in genome.items())


def genome_from_string(text: str) -> Genome:
    """Inverse of :func:`genome_to_string`.

    Raises:
        ValueError: an entry is not ``slot=op``.
    """
    genome: Genome = {}
    for pair in filter(None, (p.strip() for p in text.split(";"))):
        slot, sep, op = pair.partition("=")
        if not sep or not slot.strip() or not op.strip():
            raise ValueError(f"bad genome entry {pair!r}: expected 'slot=op'")
        genome[slot.strip()] = op.strip()
    return genome
