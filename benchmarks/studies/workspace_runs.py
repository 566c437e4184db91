"""Shared by the benchmarks that compare settings on finished ``reproduce_lenet5.py`` workspaces
(``confirm_rules.py``, ``stage2_rules.py``, ``stage2_space.py``, ``stage1_algorithms.py``): their
arguments, the replay of a workspace's pipeline with other settings, and the extra runs they
make, kept in a JSON-lines file that a second call reads instead of running again.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections import Counter
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


def run_arms(work: Callable[[tuple[str, str]], dict], roots: Sequence[Path], arms: Sequence[str], field: str,
             runs: Path, jobs: int) -> tuple[list[Path], dict[tuple[str, str], dict]]:
    """``work((workspace, arm))`` for every finished workspace under ``roots`` (by seed) and every
    arm, reusing the rows of ``runs`` (an arm is named by its row's ``field``); returns the
    workspaces and every row by (workspace, arm)."""
    workspaces = sorted(finished(roots), key=lambda ws: json.loads((ws / "config.json").read_text())["seed"])
    rows = earlier(runs)
    done = {(row["workspace"], row[field]) for row in rows}
    tasks = [(str(ws), arm) for ws in workspaces for arm in arms if (str(ws), arm) not in done]
    print(f"{len(workspaces)} workspaces x {len(arms)} {field}s, {len(tasks)} to run", flush=True)
    rows += run_all(work, tasks, runs, jobs)
    return workspaces, {(row["workspace"], row[field]): row for row in rows}


def run_all(work: Callable[[Any], dict], tasks: Sequence[Any], runs: Path, jobs: int) -> Iterator[dict]:
    """``work`` over ``tasks`` in ``jobs`` processes; each row is printed, appended to ``runs`` at
    once (a kill or crash loses only the runs still in flight) and yielded, in task order."""
    with ProcessPoolExecutor(jobs) as pool, runs.open("a") as log:
        for row in pool.map(work, tasks):
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
            yield row


def _key(params: dict) -> str:
    return json.dumps({k: v for k, v in params.items() if k not in ("job", "workspace")}, sort_keys=True)


def replay(workspace: Path, overrides: dict[str, Any]) -> tuple[Any, int, Counter]:
    """The real pipeline (``build_pipeline``) of ``workspace`` with ``overrides``, driven one job
    at a time in a copy of it: a job the workspace already ran with the same parameters is
    answered with its recorded result, every other one runs for real. Returns the finished
    pipeline, how many jobs ran and their seconds per stage. (``safs run`` also runs one job at a
    time, so replaying a workspace with no overrides runs nothing.)"""
    import torch

    from nni_safs.integration.pipelines import build_pipeline
    from nni_safs.method.contract import JobResult
    from nni_safs.settings.config import SafsConfig
    from nni_safs.training.jobs import run_job
    torch.set_num_threads(1)
    summary = json.loads((workspace / "summary.json").read_text())
    recorded = {_key({k: v for k, v in job.items() if k != "result"}): JobResult.from_dict(job["result"])
                for job in summary["jobs"]}
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(shutil.copytree(workspace, Path(tmp) / workspace.name))
        saved = json.loads((copy / "config.json").read_text())
        config = SafsConfig.from_dict({**saved, **overrides, "workspace": str(copy)})
        (copy / "config.json").write_text(json.dumps(config.to_dict()))
        pipeline = build_pipeline(config)
        ran, seconds = 0, Counter()  # stage -> seconds of the jobs run for real
        while not pipeline.finished:
            job = pipeline.ask()
            if job is None:
                raise RuntimeError(f"{workspace}: the pipeline waits with nothing running")
            result = recorded.get(_key(job.params))
            if result is None:
                result, ran = run_job(job.spec), ran + 1
                seconds[result.stage.value] += result.metrics.get("seconds", 0.0)
            result.job = job.id
            pipeline.tell(job.id, result)
    return pipeline, ran, seconds
