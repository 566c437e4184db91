"""The README's headline table, printed from the committed held-out reports.

Which held-out seed sets were declared in a commit before they ran, and what SAFS, SAFS -
magnitude pruning and SAFS - stage 2 were on them, per set and pooled over the declared sets
(paired by seed, 95% Student's t intervals). Sets that were held out but not declared before
they ran are printed apart and left out of the pool. Reads only the "Per run" rows that
``reproduce_lenet5.py`` wrote into each report; runs nothing.

    python benchmarks/headline.py        # seconds
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import NamedTuple

from nni_safs.reports.intervals import interval

RESULTS = Path(__file__).resolve().parent / "results"


class SeedSet(NamedTuple):
    """One report's seeds, the release they ran, and the commit that declared them (None: not declared)."""

    seeds: str
    report: str
    release: str
    declared: str | None


DECLARED = [
    SeedSet("35-44", "reproduce_lenet5_fresh35.md", "f61cf46", "5000e84"),
    SeedSet("45-54", "reproduce_lenet5_fresh45.md", "03c1738", "82e8629"),
    SeedSet("65-74", "reproduce_lenet5_fresh65.md", "9b0c435", "cfa86dc"),
    SeedSet("120-129", "reproduce_lenet5_heldout120.md", "f4a46a6", "f4a46a6"),  # LAHC arm of issue 35's held-out run
]
UNDECLARED = [  # never seen by a setting when they ran, but not named in a commit first
    SeedSet("5-14", "reproduce_lenet5_heldout_eb7d4e4.md", "eb7d4e4", None),
    SeedSet("5-14 again", "reproduce_lenet5_heldout.md", "b9e7966", None),  # after the first run informed a choice
    SeedSet("15-24", "reproduce_lenet5_untouched.md", "159e6c7", None),
    SeedSet("25-34", "reproduce_lenet5_fresh.md", "9bb5faa", None),
    SeedSet("55-64", "reproduce_lenet5_fresh55.md", "03c1738", None),
]


def runs(seed_set: SeedSet) -> list[dict]:
    """The report's per-run rows (one per seed)."""
    lines = (RESULTS / seed_set.report).read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith('{"scope"')]


def row(label: str, release: str, declared: str, rows: list[dict]) -> str:
    """One table line: SAFS and its paired differences, each with a 95% interval."""
    mp_epochs = [e for r in rows for e in r.get("best_epochs", {}).get("baseline", [])]
    epochs = f"{statistics.mean(mp_epochs):.2f}" if mp_epochs else "-"  # older reports did not record it
    return (f"| {label} | {release} | {declared} | {len(rows)} | {interval([r['safs'] for r in rows], signed=False)} | "
            f"{interval([r['safs'] - r['baseline'] for r in rows])} | {interval([r['safs'] - r['stage2'] for r in rows])} | "
            f"{epochs} |")


def main() -> None:
    header = ["| seeds | release | declared in | n | SAFS | SAFS - magnitude pruning | SAFS - stage 2 | "
              "magnitude pruning's best epoch (of 30) |", "|---|---|---|---|---|---|---|---|"]
    pooled = [r for s in DECLARED for r in runs(s)]
    print("\n".join([*header, *(row(s.seeds, s.release, s.declared, runs(s)) for s in DECLARED),
                     row("**declared sets pooled**", f"{len({s.release for s in DECLARED})} releases", "-", pooled)]))
    print("\nHeld out, not declared before they ran (not pooled):\n")
    print("\n".join([*header, *(row(s.seeds, s.release, "-", runs(s)) for s in UNDECLARED)]))


if __name__ == "__main__":
    main()
