"""Which hyperparameters should a stage-2 study hand to its final columns? Rules compared on finished workspaces.

A study ranks its trials by the validation top-1 after ``hpo_epochs`` (8 on the embedded
default); the final columns fine-tune for ``final_epochs`` (30), where that ranking can mislead:
a high learning rate that leads at 8 epochs may be unstable at 30. This script reads the
workspaces that ``reproduce_lenet5.py`` left (``summary.json``: every study trial and every final
run), fine-tunes each study's next-best trials at the final budget on the run's own final seeds,
and applies every rule. A rule is judged by its pick's test top-1 (mean of the final seeds):
the SAFS study's pick on its own and minus the ablation study's (stage 2) pick.

    python benchmarks/studies/stage2_rules.py --workspaces /tmp/ws_sel_top5 --runs /tmp/stage2_runs.jsonl

Runs it makes are appended to ``--runs`` (JSON lines) and reused from there on a second call.
Use it on seeds that choose settings, never on the seeds that report them.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: report.py, reproduce_lenet5.py
from confirm_rules import fine_tune  # noqa: E402
from report import write_report  # noqa: E402
from workspace_runs import arguments, earlier, finished, run_all

HERE = Path(__file__).resolve().parent
STUDIES = {"default": "stage2", "safs": "safs"}  # study variant -> its final column
# rule name -> (the study's top N trials re-scored at the final budget, final seeds that choose among them)
RULES = {"top 1 (now)": (1, 2), "top 2, first seed": (2, 1), "top 2, both seeds": (2, 2)}


def _key(hparams: dict) -> str:
    return json.dumps(hparams, sort_keys=True)


def read_run(workspace: Path) -> dict:
    """The studies' trials in ranking order and the final runs, keyed by hyperparameters and seed."""
    summary = json.loads((workspace / "summary.json").read_text())
    run = {"workspace": str(workspace), "seed": summary["config"]["seed"], "epochs": summary["config"]["final_epochs"],
           "ranked": {}, "genome": {}, "finals": {}}
    for study, column in STUDIES.items():
        trials = [job for job in summary["jobs"] if job["stage"] == "hpo" and job["variant"] == study
                  and job["result"].get("status") == "ok"]
        ranked = sorted(range(len(trials)), key=lambda i: (-trials[i]["result"]["default"], i))  # first on a tie
        run["ranked"][study] = list(dict.fromkeys(_key(trials[i]["hparams"]) for i in ranked))
        finals = [job for job in summary["jobs"] if job["stage"] == "final" and job["variant"] == column]
        run["genome"][study] = finals[0]["genome"]
        run["seeds"] = sorted(job["seed"] for job in finals)
        run["finals"][study] = {(_key(job["hparams"]), job["seed"]): (job["result"]["val_acc"], job["result"]["test_acc"])
                                for job in finals}
        assert run["ranked"][study][0] == _key(finals[0]["hparams"]), f"{workspace}: the final is not the study's best"
    return run


def regions(workspaces: list[Path], band: float = 3e-3, good: float = 60.0) -> list[str]:
    """Where the studies' trials went: per study, optimizer and learning-rate band, how many trials
    and how many reached ``good`` % validation top-1 (a working region at the study's budget)."""
    counts: dict[tuple[str, str], list[int]] = {}
    for workspace in workspaces:
        for job in json.loads((workspace / "summary.json").read_text())["jobs"]:
            if job["stage"] == "hpo":
                hparams = job["hparams"]
                region = f"{hparams['optimizer']}, lr {'<' if hparams['lr'] < band else '>='} {band:g}"
                cell = counts.setdefault((job["variant"], region), [0, 0])
                cell[0] += 1
                cell[1] += job["result"].get("default", 0.0) >= good
    return ["| study | region | trials | reached " + f"{good:g} % |", "|---|---|---|---|"] + \
        [f"| {study} | {region} | {n} | {ok} ({100 * ok / n:.0f}%) |" for (study, region), (n, ok) in sorted(counts.items())]


def pick(run: dict, study: str, top: int, seeds: int) -> str:
    """The rule's hyperparameters: the best mean validation over the first ``seeds`` final seeds."""
    finals = run["finals"][study]
    return max(run["ranked"][study][:top],
               key=lambda h: statistics.mean(finals[h, s][0] for s in run["seeds"][:seeds]))


def test(run: dict, study: str, hparams: str) -> float:
    return statistics.mean(run["finals"][study][hparams, s][1] for s in run["seeds"])


def rescore(task: tuple) -> dict:
    """One study trial's hyperparameters fine-tuned at the final budget: workspace, study, hparams, seed, genome, epochs."""
    workspace, study, hparams, seed, genome, epochs = task
    return {**fine_tune((workspace, genome, seed, epochs, hparams, True)), "study": study, "hparams": hparams}


def main() -> None:
    args = arguments(__doc__, HERE / "results" / "stage2_rules_selection.md").parse_args()
    runs = sorted(map(read_run, finished(args.workspaces)), key=lambda run: run["seed"])
    by_workspace = {run["workspace"]: run for run in runs}

    def add(row: dict) -> None:
        run = by_workspace.get(row["workspace"])
        if run is not None:
            run["finals"][row["study"]][row["hparams"], row["seed"]] = (row["val_acc"], row["test_acc"])

    for row in earlier(args.runs):
        add(row)
    top = max(n for n, _ in RULES.values())
    tasks = sorted({(run["workspace"], study, hparams, seed, run["genome"][study], run["epochs"]) for run in runs
                    for study in STUDIES for hparams in run["ranked"][study][:top] for seed in run["seeds"]
                    if (hparams, seed) not in run["finals"][study]})
    print(f"{len(runs)} runs, {len(tasks)} fine-tuning runs to make", flush=True)
    for row in run_all(rescore, tasks, args.runs, args.jobs):
        add(row)

    lines = ["# Which hyperparameters should a stage-2 study hand to its final columns?", "",
             "Command (2 CPU cores):", "",
             f"    python benchmarks/studies/stage2_rules.py --workspaces {' '.join(map(str, args.workspaces))} "
             f"--runs {args.runs}", "",
             "Each rule re-scores the study's top N trials (by the study's own validation score) at the final "
             "budget on the first one or both final seeds, and hands the best mean validation top-1 to the final "
             "column. Cells: the pick's test top-1 in the final runs (mean of the 2 final seeds), SAFS study and "
             "SAFS minus stage 2 (the ablation study under the same rule).", "",
             "| seed | " + " | ".join(f"{rule}: SAFS / - stage 2" for rule in RULES) + " |",
             "|---" * (len(RULES) + 1) + "|"]
    safs: dict[str, list[float]] = {rule: [] for rule in RULES}
    gap: dict[str, list[float]] = {rule: [] for rule in RULES}
    for run in runs:
        cells = []
        for rule, (n, seeds) in RULES.items():
            mine, ablation = (test(run, study, pick(run, study, n, seeds)) for study in ("safs", "default"))
            safs[rule].append(mine)
            gap[rule].append(mine - ablation)
            cells.append(f"{mine:.2f} / {mine - ablation:+.2f}")
        lines.append(f"| {run['seed']} | " + " | ".join(cells) + " |")
    lines += ["| mean | " + " | ".join(f"**{statistics.mean(safs[r]):.2f}** / {statistics.mean(gap[r]):+.2f}"
                                      for r in RULES) + " |",
              "| lowest | " + " | ".join(f"{min(safs[r]):.2f} / {min(gap[r]):+.2f}" for r in RULES) + " |", "",
              "Extra final-budget jobs per study and run over the present rule (2 final seeds): "
              + ", ".join(f"{rule} {(n - 1) * seeds}" for rule, (n, seeds) in RULES.items()) + "."]
    lines += ["", "Where the studies' trials went (every trial of these runs, by the study's own score):", "",
              *regions([Path(run["workspace"]) for run in runs])]
    write_report(lines, args.output)


if __name__ == "__main__":
    main()
