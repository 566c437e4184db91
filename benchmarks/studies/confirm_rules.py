"""Which genomes should stage 1's confirmation re-score? Rules compared on finished workspaces.

Reads the workspaces that ``reproduce_lenet5.py`` left (``summary.json``: every search score and
every confirmation run), fine-tunes at the confirmation's budget, on the confirmation's own fresh
seeds, each genome a rule would confirm that the run did not, and then applies every rule as the
pipeline would (all candidates on the first seed, the own activation and the best other on the
rest, ``confirm_finalists: 1``; the best mean wins, the own activation on a tie). A rule is judged
by its pick's test top-1 in those runs (mean of the seeds) minus the own activation's.

    python benchmarks/studies/confirm_rules.py --workspaces /tmp/ws_sel_top5 /tmp/ws_untouched --runs /tmp/extra.jsonl

Runs it makes are appended to ``--runs`` (JSON lines) and reused from there on a second call.
Use it on seeds that choose settings, never on the seeds that report them.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from nni_safs.method.confirmation import candidates, finalists, one_op, winner
from nni_safs.method.genomes import genome_from_string

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: report.py, reproduce_lenet5.py
from report import write_report  # noqa: E402
from workspace_runs import arguments, earlier, finished, run_all

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# rule name -> (the search's top N, the best N one-op genomes)
RULES = {"top 3": (3, 0), "top 3 + one-op": (3, 1), "top 2 + one-op": (2, 1), "top 1 + one-op": (1, 1),
         "one-op only": (0, 1)}


def read_run(workspace: Path) -> dict:
    summary = json.loads((workspace / "summary.json").read_text())
    search, confirm, own = {}, {}, None
    for job in summary["jobs"]:
        if job["stage"] != "search" or job["result"].get("status") != "ok":
            continue
        if job["variant"] == "confirm":
            own = own or job["genome"]  # the pipeline issues the own activation's run first
            confirm.setdefault(job["genome"], {})[job["seed"]] = (job["result"]["default"], job["result"]["test_acc"])
        else:
            search.setdefault(job["genome"], job["result"]["default"])  # first measurement, as the pipeline keeps
    return {"workspace": workspace, "seed": summary["config"]["seed"], "epochs": summary["config"]["confirm_epochs"],
            "search": search, "confirm": confirm, "own": own, "seeds": sorted(confirm[own])}


def confirmed(run: dict, top: int, uniform: int) -> list[str]:
    return candidates(sorted(run["search"], key=lambda g: -run["search"][g]), run["own"], top, uniform)


def pick(run: dict, genomes: list[str]) -> str:
    """The pipeline's choice with ``confirm_finalists: 1``, from the runs' validation scores."""
    scores = run["confirm"]
    first = {genome: scores[genome][run["seeds"][0]][0] for genome in genomes}
    return winner({genome: [scores[genome][s][0] for s in run["seeds"]] for genome in finalists(genomes, first, 1)})[0]


def fine_tune(task: tuple) -> dict:
    """One fine-tuning run of a finished workspace's pruned model, as its trial would make it.

    ``task``: workspace, genome string ("" for the own activation), seed, epochs, the hyperparameters
    as JSON (None: the run's own) and whether the activation scales train.
    """
    workspace, genome, seed, epochs, hparams, train_scales = task
    import torch

    from nni_safs.settings.config import SafsConfig
    from nni_safs.training.jobs import run_candidate
    torch.set_num_threads(1)
    saved = json.loads((Path(workspace) / "config.json").read_text())
    config = SafsConfig.from_dict({**saved, "hpo_space": str(REPO / "search_spaces" / "hpo_space_embedded.json")})
    out = run_candidate(config, genome_from_string(genome) if genome else None,
                        json.loads(hparams) if hparams else config.hparams, epochs, train_scales=train_scales,
                        seed=seed)
    return {"workspace": str(workspace), "genome": genome, "seed": seed, "epochs": epochs,
            "val_acc": out["val_acc"], "test_acc": out["test_acc"], "status": "diverged" if out["diverged"] else "ok"}


def main() -> None:
    args = arguments(__doc__, HERE / "results" / "confirm_uniform_selection.md").parse_args()
    runs = sorted(map(read_run, finished(args.workspaces)), key=lambda run: run["seed"])
    by_workspace = {str(run["workspace"]): run for run in runs}

    def add(row: dict) -> None:
        if row["workspace"] in by_workspace:
            by_workspace[row["workspace"]]["confirm"].setdefault(row["genome"], {})[row["seed"]] = \
                (row["val_acc"], row["test_acc"])

    for row in earlier(args.runs):
        add(row)
    tasks = sorted({(str(run["workspace"]), genome, seed, run["epochs"], None, False) for run in runs
                    for top, uniform in RULES.values() for genome in confirmed(run, top, uniform) for seed in run["seeds"]
                    if seed not in run["confirm"].get(genome, {})})
    print(f"{len(runs)} runs, {len(tasks)} fine-tuning runs to make", flush=True)
    for row in run_all(fine_tune, tasks, args.runs, args.jobs):
        add(row)

    def test(run: dict, genome: str) -> float:
        return statistics.mean(run["confirm"][genome][s][1] for s in run["seeds"])

    lines = ["# Which genomes should stage 1's confirmation re-score?", "",
             "Command (2 CPU cores):", "",
             f"    python benchmarks/studies/confirm_rules.py --workspaces {' '.join(map(str, args.workspaces))} "
             f"--runs {args.runs}", "",
             "Each rule confirms the own activation, the search's top N genomes by the search score and the "
             "search's best one-op genome (every slot the same op; not added when already among the top), with "
             "successive halving over the run's 2 fresh confirmation seeds (`confirm_finalists: 1`). Cells: the "
             "pick's test top-1 in the confirmation runs (mean of the seeds) minus the own activation's, so an "
             "estimate of stage 1 - magnitude pruning.", "",
             "| seed | own activation | " + " | ".join(RULES) + " |", "|---" * (len(RULES) + 2) + "|"]
    gains: dict[str, list[float]] = {rule: [] for rule in RULES}
    for run in runs:
        own = test(run, run["own"])
        cells = []
        for rule, (top, uniform) in RULES.items():
            chosen = pick(run, confirmed(run, top, uniform))
            gains[rule].append(test(run, chosen) - own)
            cells.append(f"{gains[rule][-1]:+.2f}" + (" (one-op)" if one_op(chosen) and chosen != run["own"] else ""))
        lines.append(f"| {run['seed']} | {own:.2f} | " + " | ".join(cells) + " |")
    lines += ["| mean | - | " + " | ".join(f"**{statistics.mean(v):+.2f}**" for v in gains.values()) + " |",
              "| lowest | - | " + " | ".join(f"{min(v):+.2f}" for v in gains.values()) + " |",
              "", "Confirmation jobs per run (2 seeds, halving): own activation + candidates on the first seed, "
              "2 on the second: at most " + ", ".join(f"{rule} {top + uniform + 1 + 2}" for rule, (top, uniform)
                                                       in RULES.items()) + "."]
    write_report(lines, args.output)


if __name__ == "__main__":
    main()
