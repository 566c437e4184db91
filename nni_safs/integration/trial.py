"""The trial entry point (``python -m nni_safs.trial``): one job, reported to NNI.

It reads its job from NNI (:mod:`nni_safs.integration.trial_channel`: NNI's protocol without importing
``nni`` where NNI 3.0 allows, so a trial pays for its epochs, not for imports), runs it
(:func:`nni_safs.training.jobs.run_job`), reports one intermediate result per epoch (validation
top-1) and the :class:`~nni_safs.method.contract.JobResult` as its final dict, whose ``default`` is
the score. The final dict also names the job, ``parameter_id``, stage and genome it really
ran: NNI 3.0 can attribute a trial to another trial's parameters at concurrency > 1, so the
tuner trusts these fields, not the manager's record.

A local trial's process usually only hands itself over to a child of a warm server that has
imported torch already (:mod:`nni_safs.integration.forkserver`); the child runs :func:`main` just the same.

A job that raises still reports a final result (``status: failed``, the error as ``reason``,
score 0), then exits non-zero so the portal shows it FAILED. A fine-tuning whose loss
diverged is a successful trial (``status: diverged``, the reason given) scored by its best
epoch before the divergence (0 if that was the first epoch).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nni_safs.integration import forkserver
from nni_safs.integration.trial_channel import TrialChannel, open_channel
from nni_safs.integration.trial_tensorboard import TrialTensorBoard
from nni_safs.method.contract import JobResult, JobSpec
from nni_safs.storage.atomic import atomic_write
from nni_safs.storage.workspace import job_lock, job_marker, load_config

if TYPE_CHECKING:
    from nni_safs.training.loop import EpochRecord


class _EpochReporter:
    """Per-epoch intermediate results to NNI, and the trial's TensorBoard events in its output dir."""

    def __init__(self, spec: JobSpec, channel: TrialChannel | None) -> None:
        self.tag = f"{spec.stage.value} job {spec.job}"
        self.channel = channel
        self.seconds = 0.0  # time spent reporting (part of the training time)
        self.board = TrialTensorBoard.for_trial(spec)

    def __call__(self, record: EpochRecord) -> None:
        start = time.perf_counter()
        if self.channel is not None:
            self.channel.report(record.val_acc, final=False)
        print(f"[{self.tag}] epoch {record.epoch}: train loss {record.train_loss:.4f}, "
              f"val top-1 {record.val_acc:.2f}%, lr {record.lr:.3g}, {record.seconds:.1f}s", flush=True)
        if self.board is not None:
            self.board.epoch(record)
        self.seconds += time.perf_counter() - start

    def finish(self, result: JobResult) -> None:
        """The result's scalars for TensorBoard's HParams view."""
        if self.board is not None:
            self.board.finish(result)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


def _write_marker(path: Path, marker: dict[str, Any]) -> None:
    atomic_write(path, lambda handle: handle.write(json.dumps(marker).encode()))


def mark_started(spec: JobSpec, key: str, parameter_id: int | None) -> JobResult | None:
    """Record which NNI trial runs this job; return the job's result if it already finished.

    The marker is named by the spec's ``key`` (:meth:`JobSpec.key`), not the job's number:
    another run on this workspace numbers its jobs differently. It lets the tuner tell whose
    trial died without a result (NNI 3.0's trial_end may name another trial's parameters at
    concurrency > 1). A finished result is returned because ``nnictl resume`` re-runs every
    trial still marked RUNNING, including ones that had already reported: they re-report
    instead of training again. It is returned only when the marker's spec equals this one,
    and as this job's (its number, its parameter id).
    """
    path = job_marker(spec.workspace, key)
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous.get("result") is not None and previous.get("spec") == spec.identity():
            result = JobResult.from_dict(previous["result"])
            result.job, result.parameter_id, result.key = spec.job, parameter_id, key
            return result
    _write_marker(path, {"key": key, "job": spec.job, "spec": spec.identity(),
                         "trial_job_id": os.environ.get("NNI_TRIAL_JOB_ID"), "parameter_id": parameter_id,
                         "pid": os.getpid(), "started": time.time()})
    return None


def process_started() -> float:
    """When this process started, as ``time.time()`` would have said then.

    On Linux from the kernel's start tick against the boot clock (psutil's ``create_time`` is
    off by up to a second: it adds the boot time, which /proc gives in whole seconds).
    """
    try:
        with open("/proc/self/stat") as stat:
            ticks = int(stat.read().rpartition(")")[2].split()[19])
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, AttributeError, ValueError, IndexError):
        import psutil
        return psutil.Process().create_time()


def main(argv: list[str] | None = None, started: float | None = None) -> int:
    """Run the job; ``started``: when the trial's process started (a warm child's client's)."""
    startup = time.time() - (started or process_started())  # start and imports, before any work
    parser = argparse.ArgumentParser(prog="python -m nni_safs.trial", description=__doc__.split("\n")[0])
    parser.add_argument("--params", help="run this job's parameters (a JSON file, e.g. copied from the "
                                         "portal) by hand instead of asking NNI")
    args = parser.parse_args(argv)
    channel = None if args.params else open_channel()  # by hand: the results are printed, not reported
    params = json.loads(Path(args.params).read_text()) if args.params else channel.next_parameters()
    if not params:
        print("nni_safs.trial runs inside an NNI experiment (nnictl create), or by hand with --params FILE; "
              "no parameters were received", file=sys.stderr)
        return 2
    spec = JobSpec.from_params(params)
    parameter_id = channel.parameter_id if channel else None
    warm = forkserver.started_warm()
    reporter = _EpochReporter(spec, channel)
    key = ""

    def report_final(value: dict[str, Any]) -> None:
        print(f"final: {json.dumps(value)}", flush=True)  # trial.log (and the console when run by hand)
        if channel is not None:
            channel.report(value, final=True)

    try:
        from nni_safs.training.jobs import run_job  # torch (a warm child has it already)

        key = spec.key(load_config(spec.workspace).to_dict())
        # One job, one evaluation: after `nnictl resume` NNI may re-run a job's trial while the
        # tuner re-issues it too. The second trial waits here for the first and re-reports its
        # result; if the first died, the OS released its lock and the job runs again.
        with job_lock(spec.workspace, key):
            finished = mark_started(spec, key, parameter_id)
            if finished is None:
                result = run_job(spec, on_epoch=reporter)
                result.parameter_id, result.key = parameter_id, key
                result.metrics["warm"] = warm
                result.metrics.setdefault("timings", {})["startup"] = startup
                _write_marker(job_marker(spec.workspace, key),
                              {"key": key, "job": spec.job, "spec": spec.identity(),
                               "trial_job_id": os.environ.get("NNI_TRIAL_JOB_ID"), "result": result.to_dict()})
        reporter.finish(finished or result)
    except BaseException as err:  # report, then fail visibly (an import, a lock, the job itself)
        traceback.print_exc(file=sys.stdout)  # trial.log, which the portal shows
        failed = JobResult.failed(spec, f"{type(err).__name__}: {err}")
        failed.parameter_id, failed.key = parameter_id, key
        failed.metrics["warm"] = warm
        report_final(failed.to_dict())
        reporter.finish(failed)
        if not isinstance(err, Exception):
            raise
        return 1
    finally:
        reporter.close()
    if finished is not None:
        print(f"job {spec.job}: an equal job (same spec and settings) already finished in this workspace; "
              "reporting its result", flush=True)
        report_final(finished.to_dict())
        return 0
    start = time.perf_counter()
    report_final(result.to_dict())
    timings = {**result.metrics["timings"],
               "reporting": reporter.seconds + time.perf_counter() - start}
    print(f"timings: {json.dumps(timings)}", flush=True)
    return 0


def run_command() -> None:
    """``python -m nni_safs.trial``: hand the job to a warm server when one serves it, else run it here."""
    started = process_started()
    warm = forkserver.run_in_server(sys.argv[1:], started) if forkserver.wanted() else None
    exit_code = main(started=started) if warm is None else warm
    # everything is written, closed and unlocked by now: skip the interpreter's teardown, which
    # torch makes slow
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
