"""Finished runs side by side (``safs compare``): each group's column means and paired differences.

Runs are grouped by one setting (``--by KEY``, e.g. ``search_algorithm``) or, by default, by every
setting that differs between them other than ``seed`` and ``workspace``, so two configs run over
the same seeds fall into two groups without naming the key. Each table column is the runs' mean
with its 95 % interval (Student's t). Differences are paired: between the columns of one run
(SAFS - magnitude pruning: the same seed, splits and dense model), and between groups when every
group has one run per seed (paired by seed, each group against the first one given).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from nni_safs.reports.intervals import interval
from nni_safs.reports.results import TABLE, run_status
from nni_safs.settings.config import SafsConfig
from nni_safs.storage.workspace import SUMMARY_FILE

NOT_GROUPING = ("seed", "workspace")  # what differs between the runs of one setting
DIFFERENCES = (("stage1", "baseline"), ("safs", "baseline"), ("safs", "stage2"))  # (minuend, subtrahend) keys
TITLES = dict(TABLE)


@dataclass(frozen=True)
class Run:
    """One finished run as compared: its settings, each column's test top-1 and what it cost."""

    workspace: Path
    config: dict[str, Any]
    columns: dict[str, float | None]  # TABLE key -> test top-1 (%), the mean over the run's final seeds
    trials: int
    minutes: float  # the sum of its jobs' own seconds (a resumed run counts its first run's work)

    @property
    def seed(self) -> int:
        """The run's seed (splits, dense model, search): what pairs runs of two groups."""
        return self.config["seed"]


def load_run(workspace: str | Path) -> Run:
    """The finished run in ``workspace``; ValueError (naming the workspace and where it stands) otherwise."""
    workspace = Path(workspace)
    file = workspace / SUMMARY_FILE
    if not file.is_file():
        raise ValueError(f"{str(workspace)!r} is not a finished run's workspace: no {SUMMARY_FILE} "
                         f"({run_status(workspace) if workspace.is_dir() else 'no such folder'})")
    summary = json.loads(file.read_text())
    if not summary.get("finished") or summary.get("failure"):
        raise ValueError(f"{str(workspace)!r} is not a finished run: {run_status(workspace)}")
    columns = {key: (summary["columns"].get(key) or {}).get("test_acc") for key, _ in TABLE}
    seconds = sum((job.get("result") or {}).get("seconds", 0.0) for job in summary["jobs"])
    return Run(workspace, summary["config"], columns, sum(summary["trials_per_stage"].values()), seconds / 60)


def load_runs(workspaces: Sequence[str | Path]) -> list[Run]:
    """Every workspace's finished run; one ValueError naming all that are not finished runs."""
    runs, bad = [], []
    for workspace in workspaces:
        try:
            runs.append(load_run(workspace))
        except ValueError as err:
            bad.append(str(err))
    if bad:
        good = [str(run.workspace) for run in runs]
        raise ValueError("; ".join(bad) + (f". Finished runs among those given: {', '.join(good)}" if good else
                                           ". None of those given is a finished run"))
    return runs


def group_runs(runs: Sequence[Run], by: str | None = None) -> tuple[str, dict[str, list[Run]]]:
    """(what the groups are named by, group label -> its runs), groups in the order first given.

    ``by``: a settings key; None groups by the settings that differ between the runs (besides
    ``seed`` and ``workspace``), one group when none does.
    """
    valid = [key for key in SafsConfig.defaults() if key not in NOT_GROUPING]
    if by is not None and by not in valid:
        raise ValueError(f"unknown --by key {by!r}; valid: {', '.join(valid)}")
    keys = [by] if by else [key for key in valid if len({_text(run.config.get(key)) for run in runs}) > 1]
    groups: dict[str, list[Run]] = {}
    for run in runs:
        label = ", ".join(f"{key}={_text(run.config.get(key))}" for key in keys) if len(keys) != 1 else \
            _text(run.config.get(keys[0]))
        groups.setdefault(label or "all runs", []).append(run)
    return (", ".join(keys) or "runs"), groups


def comparison(runs: Sequence[Run], by: str | None = None) -> list[str]:
    """The comparison as markdown lines: the means table, the differences within runs, and between
    groups where they pair by seed."""
    name, groups = group_runs(runs, by)
    lines = [f"{len(runs)} finished runs grouped by {name}. Test top-1 (%): a run's column is the mean over its "
             "final fine-tuning seeds; per group, the mean over its runs and its 95% interval (Student's t).", "",
             f"| {name} | runs | seeds | " + " | ".join(title for _, title in TABLE) + " | trials | minutes |",
             "|---" * (len(TABLE) + 5) + "|"]
    for label, mine in groups.items():
        lines.append(f"| {label} | {len(mine)} | {_seeds(mine)} | "
                     + " | ".join(_summary([run.columns[key] for run in mine], signed=False) for key, _ in TABLE)
                     + f" | {sum(run.trials for run in mine) / len(mine):.0f}"
                     f" | {sum(run.minutes for run in mine) / len(mine):.1f} |")
    lines += ["", "Paired within each run (same seed, splits and dense model): mean difference [95% interval].", "",
              f"| {name} | " + " | ".join(f"{TITLES[a]} - {TITLES[b]}" for a, b in DIFFERENCES) + " |",
              "|---" * (len(DIFFERENCES) + 1) + "|"]
    for label, mine in groups.items():
        lines.append(f"| {label} | " + " | ".join(
            _summary([_minus(run.columns[a], run.columns[b]) for run in mine]) for a, b in DIFFERENCES) + " |")
    if len(groups) > 1:
        lines += ["", *_between_groups(groups, name)]
    return lines


def _between_groups(groups: dict[str, list[Run]], name: str) -> list[str]:
    """Each group against the first, column by column, paired by seed; or why they do not pair."""
    repeated = [label for label, mine in groups.items() if len({run.seed for run in mine}) < len(mine)]
    if repeated:
        return [f"Groups not paired by seed: {', '.join(repeated)} ran a seed more than once."]
    (first, reference), *others = groups.items()
    by_seed = {run.seed: run for run in reference}
    lines = [f"Paired by seed against {name} = {first}: mean difference [95% interval] over the seeds both ran.", "",
             f"| {name} | seeds paired | " + " | ".join(title for _, title in TABLE) + " |",
             "|---" * (len(TABLE) + 2) + "|"]
    for label, mine in others:
        pairs = [(run, by_seed[run.seed]) for run in mine if run.seed in by_seed]
        cells = [_summary([_minus(run.columns[key], ref.columns[key]) for run, ref in pairs]) for key, _ in TABLE]
        lines.append(f"| {label} - {first} | {len(pairs)} | " + " | ".join(cells) + " |")
    return lines


def _minus(a: float | None, b: float | None) -> float | None:
    return a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None


def _summary(values: Sequence[float | None], signed: bool = True) -> str:
    numbers = [value for value in values if isinstance(value, (int, float))]
    return interval(numbers, signed) if numbers else "-"


def _seeds(runs: Sequence[Run]) -> str:
    return ", ".join(str(seed) for seed in sorted(run.seed for run in runs))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
