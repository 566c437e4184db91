"""Does another stage-1 algorithm (or budget) give the same columns for fewer epochs? Replayed on finished workspaces.

Each arm is a set of settings (``key=value,...``; ``recorded`` keeps the workspace's own) with
which the real pipeline of every ``reproduce_lenet5.py`` workspace is replayed one job at a time
(``workspace_runs.replay``): jobs the workspace ran with the same parameters (prepare, the
baselines, and with the same seed the stage-2 ablation study and its column) are answered with
their recorded results, every other job (stage 1, the SAFS study, the stage-1 and SAFS
columns) runs for real. ``safs run`` also runs one job at a time, so the ``recorded`` arm
runs nothing and reports the workspace's own run; every arm is paired with it by seed.

    python benchmarks/stage1_algorithms.py --workspaces /tmp/ws_lahc --runs /tmp/stage1.jsonl \\
        --arms recorded search_algorithm=asha,search_steps=20,search_epochs=30,search_min_epochs=3,\\
confirm_top=0,confirm_uniform=0

One JSON line per (workspace, arm) is appended to ``--runs`` and reused from there on a second
call. Use it on seeds that choose settings, never on the seeds that report them.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "studies"))  # workspace_runs.py
from report import write_report  # noqa: E402
from workspace_runs import arguments, replay, run_arms  # noqa: E402

from nni_safs.method.genomes import genome_from_string  # noqa: E402
from nni_safs.reports.intervals import interval  # noqa: E402

HERE = Path(__file__).resolve().parent
COLUMNS = ("baseline", "stage1", "stage2", "safs")
RECORDED = "recorded"


def overrides(arm: str) -> dict:
    """``recorded`` (the workspace's own settings) or ``key=value,...``."""
    from nni_safs.overrides import parse_overrides
    return {} if arm == RECORDED else parse_overrides(arm.split(","))


def rerun(task: tuple[str, str]) -> dict:
    """One workspace with one arm: its columns, what its stage 1 chose and what each stage cost."""
    workspace, arm = Path(task[0]), task[1]
    from nni_safs.reports.results import build_summary
    pipeline, ran, seconds = replay(workspace, overrides(arm))
    summary = build_summary(pipeline)
    epochs: dict[str, int] = {}
    for job in pipeline.jobs.values():
        epochs[job.stage.value] = epochs.get(job.stage.value, 0) + job.spec.epochs
    winner = summary["stages"]["search"]["winner"]
    return {"workspace": str(workspace), "arm": arm, "seed": pipeline.config.seed, "jobs_run": ran,
            "seconds": seconds, "failure": pipeline.failure,
            **{name: summary["columns"].get(name, {}).get("test_acc") for name in COLUMNS},
            "winner": winner, "own": pipeline.own_activation,
            "epochs": epochs, "search_jobs": pipeline.count("search")}


def kind(row: dict) -> str:
    """What stage 1 chose: the model's own activation, another one-op genome, or a layer-wise one."""
    ops = set(genome_from_string(row["winner"] or "").values())
    return "own" if ops == {row["own"]} else "one-op" if len(ops) == 1 else "layer-wise"


def main() -> None:
    parser = arguments(__doc__, HERE / "results" / "stage1_algorithms_selection.md")
    parser.add_argument("--arms", nargs="+", required=True,
                        help=f"'{RECORDED}' or key=value,... settings; the first is the reference")
    parser.add_argument("--note", action="append", default=[], help="a paragraph for the report (repeatable)")
    args = parser.parse_args()
    for arm in args.arms:
        overrides(arm)  # a bad key fails here, before any run
    workspaces, table = run_arms(rerun, args.workspaces, args.arms, "arm", args.runs, args.jobs)
    complete = [ws for ws in workspaces if all(
        (str(ws), arm) in table and table[(str(ws), arm)]["safs"] is not None for arm in args.arms)]
    names = [f"arm {i}" for i in range(len(args.arms))]
    lines = ["# Stage-1 algorithms and budgets: the same columns for fewer epochs?", "",
             "Command (2 CPU cores, shared):", "",
             f"    python benchmarks/stage1_algorithms.py --workspaces {' '.join(map(str, args.workspaces))} "
             f"--runs {args.runs} --arms {' '.join(args.arms)}" + (" --note ... (the paragraphs below)" if args.note else ""),
             "",
             "Arms: " + "; ".join(f"**{name}** `{arm}`" for name, arm in zip(names, args.arms)) + ".", "",
             f"Seeds {sorted(table[(str(ws), args.arms[0])]['seed'] for ws in complete)}.", "",
             *(line for note in args.note for line in (note, "")),
             "Each workspace's pipeline replayed with each arm (test top-1 %, mean of the final seeds; "
             "stage-1 epochs: the epochs of every stage-1 job, the confirmation's included). Per seed:", "",
             "| seed | arm | magnitude pruning | stage 1 | stage 2 | SAFS | stage-1 epochs | stage-1 jobs | "
             "stage 1 chose | stage 1 - MP | SAFS - stage 2 | SAFS - MP |", "|---" * 12 + "|"]
    for ws in complete:
        for name, arm in zip(names, args.arms):
            r = table[(str(ws), arm)]
            lines.append(f"| {r['seed']} | {name} | {r['baseline']:.2f} | {r['stage1']:.2f} | {r['stage2']:.2f} | "
                         f"{r['safs']:.2f} | {r['epochs'].get('search', 0)} | {r['search_jobs']} | "
                         f"{kind(r)} | {r['stage1'] - r['baseline']:+.2f} | "
                         f"{r['safs'] - r['stage2']:+.2f} | {r['safs'] - r['baseline']:+.2f} |")
    lines += ["", f"Over the {len(complete)} seeds: mean [95% interval] (Student's t).", "",
              "| arm | stage 1 - MP | SAFS - stage 2 | SAFS - MP | stage 1 | SAFS | stage-1 epochs | "
              "stage 1 chose (own / one-op / layer-wise) |", "|---" * 8 + "|"]
    for name, arm in zip(names, args.arms):
        mine = [table[(str(ws), arm)] for ws in complete]
        if not mine:
            continue
        lines.append(f"| {name} | {interval([r['stage1'] - r['baseline'] for r in mine])} | "
                     f"{interval([r['safs'] - r['stage2'] for r in mine])} | "
                     f"{interval([r['safs'] - r['baseline'] for r in mine])} | "
                     f"{statistics.mean(r['stage1'] for r in mine):.2f} | "
                     f"{statistics.mean(r['safs'] for r in mine):.2f} | "
                     f"{statistics.mean(r['epochs'].get('search', 0) for r in mine):.0f} | "
                     f"{' / '.join(str(sum(kind(r) == k for r in mine)) for k in ('own', 'one-op', 'layer-wise'))} |")
    if len(args.arms) > 1 and complete:
        reference = [table[(str(ws), args.arms[0])] for ws in complete]
        lines += ["", f"Paired by seed against {names[0]}, mean [95% interval]:", "",
                  "| arm | stage 1 | stage 2 | SAFS | stage-1 epochs (ratio of the means) |", "|---" * 5 + "|"]
        for name, arm in zip(names[1:], args.arms[1:]):
            mine = [table[(str(ws), arm)] for ws in complete]
            ratio = statistics.mean(r["epochs"].get("search", 0) for r in mine) / \
                statistics.mean(r["epochs"].get("search", 0) for r in reference)
            lines.append(f"| {name} | " + " | ".join(
                interval([a[key] - b[key] for a, b in zip(mine, reference)]) for key in ("stage1", "stage2", "safs"))
                + f" | {ratio:.2f} |")
    lines += ["", "Per run:", "", "```", *(json.dumps(table[(str(ws), arm)]) for ws in complete for arm in args.arms),
              "```"]
    write_report(lines, args.output)


if __name__ == "__main__":
    main()
