"""Does a stage-2 search space help the studies? Stage 2 rerun on finished workspaces, stage 1 replayed.

Drives the real pipeline (``build_pipeline``) of each workspace that ``reproduce_lenet5.py`` left,
one job at a time, with ``hpo_space`` set to each space given: jobs the workspace already ran
with the same parameters (prepare, baselines, stage 1 and its confirmation, the stage-1 column)
are answered with their recorded results, and every other job (the two studies and their final
columns) runs for real in a copy of the workspace. Every space runs through the same driver,
so the comparison is like for like; the studies see their results in issue order (the
experiment's concurrency 2 lets them see some later), so a space's figures here differ a little
from a full run's.

    python benchmarks/studies/stage2_space.py --workspaces /tmp/ws_sel_top5 \\
        --spaces search_spaces/hpo_space_embedded.json /tmp/narrow.json --runs /tmp/stage2_space.jsonl
    python benchmarks/studies/stage2_space.py --workspaces /tmp/ws_sel_top5 --runs /tmp/stage2_space.jsonl \\
        --spaces benchmarks/spaces/adam_only.json benchmarks/spaces/adam_only.json,hpo_trials=12

A space may carry stage-2 settings after commas (``SPACE,key=value,...``, as ``--set`` reads
them), so a study's budget is compared the same way.

One JSON line per (workspace, space) is appended to ``--runs`` and reused from there on a second
call. Use it on seeds that choose settings, never on the seeds that report them.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: report.py
from report import write_report  # noqa: E402
from workspace_runs import arguments, replay, run_arms  # noqa: E402

from nni_safs.reports.intervals import interval  # noqa: E402

HERE = Path(__file__).resolve().parent
COLUMNS = ("baseline", "stage1", "stage2", "safs")


def arm(text: str) -> tuple[Path, dict]:
    """``SPACE[,key=value,...]``: the hpo_space file and the settings changed with it."""
    from nni_safs.overrides import parse_overrides
    space, *pairs = text.split(",")
    return Path(space), parse_overrides(pairs)


def rerun(task: tuple[str, str]) -> dict:
    """Stage 2 of one workspace with one arm; what it measured and how many jobs ran for real."""
    workspace, label = Path(task[0]), task[1]
    space, overrides = arm(label)

    from nni_safs.reports.results import build_summary
    pipeline, ran, seconds = replay(workspace, {**overrides, "hpo_space": str(space.resolve())})
    config = pipeline.config
    columns = build_summary(pipeline)["columns"]
    return {"workspace": str(workspace), "space": label, "seed": config.seed, "jobs_run": ran, "seconds": seconds,
            "failure": pipeline.failure, **{name: columns.get(name, {}).get("test_acc") for name in COLUMNS},
            "hparams": {name: columns.get(name, {}).get("hparams") for name in ("stage2", "safs")}}


def _name(label: str) -> str:
    """An arm as the report names it: the space's file name and its settings."""
    space, *pairs = label.split(",")
    return ",".join([Path(space).name, *pairs])


def main() -> None:
    parser = arguments(__doc__, HERE / "results" / "stage2_space_selection.md")
    parser.add_argument("--spaces", nargs="+", required=True,
                        help="hpo_space files to compare, each optionally followed by ,key=value settings")
    args = parser.parse_args()
    for text in args.spaces:
        arm(text)  # a bad key fails here, before any run
    workspaces, table = run_arms(rerun, args.workspaces, args.spaces, "space", args.runs, args.jobs)
    spaces = args.spaces  # each arm as given: its label in the runs file
    lines = ["# Does a stage-2 search space help the studies?", "", "Command (2 CPU cores):", "",
             f"    python benchmarks/studies/stage2_space.py --workspaces {' '.join(map(str, args.workspaces))} "
             f"--spaces {' '.join(spaces)} --runs {args.runs}", "",
             "Stage 1 replayed from each workspace, both studies and their final columns rerun with each space "
             "(test top-1 %, mean of the 2 final seeds). Cells: SAFS / stage 2.", "",
             "| seed | magnitude pruning | " + " | ".join(f"`{_name(s)}`" for s in spaces) + " |",
             "|---" * (len(spaces) + 2) + "|"]
    safs: dict[str, list[float]] = {s: [] for s in spaces}
    stage2: dict[str, list[float]] = {s: [] for s in spaces}
    for ws in workspaces:
        found = [table.get((str(ws), s)) for s in spaces]
        if not all(found) or any(row["safs"] is None or row["stage2"] is None for row in found):
            continue
        for s, row in zip(spaces, found):
            safs[s].append(row["safs"])
            stage2[s].append(row["stage2"])
        lines.append(f"| {found[0]['seed']} | {found[0]['baseline']:.2f} | "
                     + " | ".join(f"{row['safs']:.2f} / {row['stage2']:.2f}" for row in found) + " |")
    lines += ["| mean | - | " + " | ".join(f"**{statistics.mean(safs[s]):.2f}** / {statistics.mean(stage2[s]):.2f}"
                                          for s in spaces) + " |",
              "| lowest | - | " + " | ".join(f"{min(safs[s]):.2f} / {min(stage2[s]):.2f}" for s in spaces) + " |"]
    lines += ["", "SAFS - stage 2, paired by seed, mean [95% interval]: " + "; ".join(
        f"`{_name(s)}` {interval([a - b for a, b in zip(safs[s], stage2[s])])}" for s in spaces) + "."]
    if len(spaces) > 1:
        lines += ["", f"Paired by seed, against `{_name(spaces[0])}`: " + "; ".join(
            f"`{_name(s)}` SAFS {interval([a - b for a, b in zip(safs[s], safs[spaces[0]])])}, "
            f"stage 2 {interval([a - b for a, b in zip(stage2[s], stage2[spaces[0]])])}" for s in spaces[1:]) + "."]
    timed = {s: [row["seconds"]["hpo"] for row in table.values() if row["space"] == s and "hpo" in row.get("seconds", {})]
             for s in spaces}
    if any(timed.values()):
        lines += ["", "Both studies' job-seconds per workspace (jobs run for real, cores shared), mean: " + "; ".join(
            f"`{_name(s)}` {statistics.mean(v):.0f} s over {len(v)}" for s, v in timed.items() if v) + "."]
    write_report(lines, args.output)


if __name__ == "__main__":
    main()
