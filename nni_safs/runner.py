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

from pathlib import Path

from tqdm.auto import tqdm

from nni_safs.integration.pipelines import build_pipeline
from nni_safs.method.contract import JobResult, JobSpec
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
        low, high = pipeline.evaluation_bounds()
        jobs_bar = tqdm(total=high, desc="SAFS jobs", unit="job", disable=not progress, position=0)
        jobs_bar.update(len(pipeline.results))
        while not pipeline.finished:
            interrupted = [j for j in pipeline.jobs.values() if j.id not in pipeline.results]
            job = interrupted[0] if interrupted else pipeline.ask()  # a restart re-runs the lost job
            if job is None:
                raise RuntimeError("the pipeline is waiting on results although no job is running (a bug)")
            jobs_bar.set_description(f"SAFS {job.stage}")
            jobs_bar.set_postfix_str(job.variant)
            pipeline.tell(job.id, _run_with_progress(job.spec, progress))
            journal.save({"pipeline": pipeline.state_head()},
                         pipeline.state_logs("pipeline."))
            jobs_bar.update(1)
            total = pipeline.total_if_known()
            if total is not None:
                jobs_bar.total = total
        jobs_bar.close()
        return write_results(pipeline)
    finally:
        journal.close()


def _run_with_progress(spec: JobSpec, progress: bool) -> JobResult:
    bar = tqdm(total=spec.epochs, desc=f"  {spec.stage.value} job {spec.job}", unit="epoch",
               leave=False, disable=not progress, position=1)

    def on_epoch(record) -> None:
        bar.set_postfix(val=f"{record.val_acc:.2f}%")
        bar.update(1)

    try:
        return run_job(spec, on_epoch=on_epoch)
    except Exception as err:  # one failing job must not end the run
        tqdm.write(f"job {spec.job} ({spec.stage.value}) failed: {type(err).__name__}: {err}")
        return JobResult.failed(spec, f"{type(err).__name__}: {err}")
    finally:
        bar.close()
