"""Run the whole SAFS pipeline in this process, without the NNI manager.

Same stage machine (:class:`~nni_safs.method.pipeline.SafsPipeline`) and same job code
(:func:`nni_safs.training.jobs.run_job`) as an NNI experiment, one job after another: for quick
runs, notebooks, benchmarks and machines where the NNI manager is not wanted. The state is
saved after every job, so running it again on the same workspace continues where a crash
or Ctrl-C left it. The workspace is this run's record (``run.json``: ``safs run``): one that
holds an NNI experiment's results is refused, and a second ``safs run`` on it while the first
still runs is refused at once, before it trains anything.
"""
from __future__ import annotations

import sys
from pathlib import Path

from nni_safs.integration.pipelines import build_pipeline
from nni_safs.method.contract import JobResult
from nni_safs.method.pipeline import Job, SafsPipeline
from nni_safs.progress import ProgressLine
from nni_safs.reports.results import write_results
from nni_safs.settings.config import SafsConfig
from nni_safs.storage.journal import Journal
from nni_safs.storage.workspace import IN_PROCESS_RUN, RUNNER_STATE_FILE, open_workspace
from nni_safs.training.jobs import run_job


def run_pipeline(config: SafsConfig, base_dir: str | Path | None = None, progress: bool = True) -> str:
    """Run (or continue) every stage; returns the results table (also in the workspace)."""
    config = open_workspace(config, base_dir, run=IN_PROCESS_RUN)
    journal = Journal(Path(config.workspace) / RUNNER_STATE_FILE)  # one writer: refused at once if busy
    try:
        pipeline = build_pipeline(config)
        state = journal.load()
        if state is not None:  # the workspace's config.json is write-once: same settings
            pipeline = pipeline.restored(state["pipeline"])
        line = ProgressLine("jobs", sys.stderr, enabled=progress)
        try:
            while not pipeline.finished:
                interrupted = [j for j in pipeline.jobs.values() if j.id not in pipeline.results]
                job = interrupted[0] if interrupted else pipeline.ask()  # a restart re-runs the lost job
                if job is None:
                    raise RuntimeError("the pipeline is waiting on results although no job is running (a bug)")
                pipeline.tell(job.id, _run_with_progress(pipeline, job, line))
                journal.save({"pipeline": pipeline.state_head()},
                             pipeline.state_logs("pipeline."))
            _show(line, pipeline, "done")
        finally:
            line.close()
        return write_results(pipeline)
    finally:
        journal.close()


def _show(line: ProgressLine, pipeline: SafsPipeline, state: str, live: str = "") -> None:
    """Jobs done of the exact total once stage 1 is over, of the most it can take before."""
    total = pipeline.total_if_known()
    line.update(len(pipeline.results), pipeline.evaluation_bounds()[1] if total is None else total, state,
                exact=total is not None, live=live)


def _run_with_progress(pipeline: SafsPipeline, job: Job, line: ProgressLine) -> JobResult:
    state = f"SAFS {job.stage.value} ({job.variant}, job {job.id})"
    _show(line, pipeline, state)

    def on_epoch(record) -> None:
        _show(line, pipeline, state, live=f"epoch {record.epoch}/{job.spec.epochs}, val {record.val_acc:.2f}%")

    try:
        return run_job(job.spec, on_epoch=on_epoch)
    except Exception as err:  # one failing job must not end the run
        print(f"job {job.id} ({job.stage.value}) failed: {type(err).__name__}: {err}", flush=True)
        return JobResult.failed(job.spec, f"{type(err).__name__}: {err}")
