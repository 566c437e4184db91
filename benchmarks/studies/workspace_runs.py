"""Shared by the benchmarks that compare settings on finished ``reproduce_lenet5.py`` workspaces
(``confirm_rules.py``, ``stage2_rules.py``, ``stage2_space.py``): their arguments, and the extra
runs they make, kept in a JSON-lines file that a second call reads instead of running again.
"""
from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence


def arguments(doc: str, output: Path) -> argparse.ArgumentParser:
    """``--workspaces``, ``--runs``, ``--jobs`` and ``--output`` (default ``output``)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspaces", type=Path, nargs="+", required=True,
                        help="folders of reproduce_lenet5.py workspaces (one sub-folder per run)")
    parser.add_argument("--runs", type=Path, required=True, help="JSON-lines file of extra runs (read and appended)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--output", type=Path, default=output)
    return parser


def finished(roots: Sequence[Path]) -> list[Path]:
    """The runs under ``roots`` that wrote their summary."""
    return [ws for root in roots for ws in root.iterdir() if (ws / "summary.json").exists()]


def earlier(runs: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in runs.read_text().splitlines()] if runs.exists() else []


def run_all(work: Callable[[Any], dict], tasks: Sequence[Any], runs: Path, jobs: int) -> Iterator[dict]:
    """``work`` over ``tasks`` in ``jobs`` processes; each row is printed, appended to ``runs`` at
    once (a kill or crash loses only the runs still in flight) and yielded, in task order."""
    with ProcessPoolExecutor(jobs) as pool, runs.open("a") as log:
        for row in pool.map(work, tasks):
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
            yield row
