"""Did two runs do the same thing? Compares two workspaces job by job (what each job ran and
what it scored; timings and devices left out), from their ``summary.json``.

    python benchmarks/studies/same_jobs.py /tmp/ws_before /tmp/ws_after

A refactor claims "no behaviour change" with two in-process runs (``safs run``, one job at a
time, so nothing depends on timing) of the same config at the two commits, on one machine.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

RAN = ("stage", "variant", "genome", "hparams", "seed", "epochs", "train_scales")
SCORED = ("default", "val_acc", "test_acc", "status", "best_epoch")


def job_rows(workspace: Path) -> list[str]:
    """Each job of the workspace's run as one sorted JSON line: what it ran and what it scored."""
    summary = json.loads((workspace / "summary.json").read_text())
    rows = []
    for job in summary["jobs"]:
        result = job.get("result") or {}
        rows.append(json.dumps({**{k: job.get(k) for k in RAN}, **{k: result.get(k) for k in SCORED}},
                               sort_keys=True))
    return sorted(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()
    first, second = job_rows(args.first), job_rows(args.second)
    only_first, only_second = sorted(set(first) - set(second)), sorted(set(second) - set(first))
    print(f"{len(first)} and {len(second)} jobs; {len(only_first)} only in the first, {len(only_second)} only in "
          f"the second: {'the same jobs and scores' if first == second else 'they differ'}")
    for row in only_first[:10]:
        print("- " + row)
    for row in only_second[:10]:
        print("+ " + row)


if __name__ == "__main__":
    main()
