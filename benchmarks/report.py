"""Shared output of the benchmark scripts: a markdown result under benchmarks/results/, also printed."""
from __future__ import annotations

from pathlib import Path


def write_report(lines: list[str], output: Path) -> None:
    text = "\n".join(lines) + "\n"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(text)
