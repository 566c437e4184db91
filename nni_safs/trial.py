"""The trial entry point (``python -m nni_safs.trial``), a thin adapter around the workspace.

It reads its job from NNI (:mod:`nni_safs.trial_channel`: NNI's protocol without importing
``nni`` where NNI 3.0 allows, so a trial pays for its epochs, not for imports), loads the run's settings from the
workspace (``config.json``, written by the tuner), runs the job, reports one intermediate
result per epoch (validation top-1) and a final dict whose ``default`` is the validation
top-1. The final dict also names the job, ``parameter_id``, stage and genome it really ran:
NNI 3.0 can attribute a trial to another trial's parameters at concurrency > 1, so the
tuner trusts these fields, not the manager's record.

A job that fails (an exception) still reports a final result with ``failed`` set and a
score of 0, then exits non-zero so the portal shows it FAILED. A fine-tuning whose loss
diverged is a successful trial scored by its best epoch before the divergence (0 if that
was the first epoch), with ``diverged`` set and the reason in ``failure``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import psutil
import torch

from .activations import genome_from_string
from .atomic import atomic_write
from .trial_channel import TrialChannel, open_channel
from .training import EpochRecord
from .workspace import job_lock, job_marker, load_config, prepare, run_candidate

_logger = logging.getLogger("nni_safs.trial")
class _EpochReporter:
    """Per-epoch intermediate results to NNI and scalars to TensorBoard in the trial's output dir."""

    def __init__(self, tag: str, channel: TrialChannel | None) -> None:
        self.tag = tag
        self.channel = channel
        self.seconds = 0.0  # time spent reporting (part of the training time)
        self.writer = None
        output_dir = os.environ.get("NNI_OUTPUT_DIR")
        if output_dir:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(os.path.join(output_dir, "tensorboard"))

    def __call__(self, record: EpochRecord) -> None:
        start = time.perf_counter()
        if self.channel is not None:
            self.channel.report(record.val_acc, final=False)
        print(f"[{self.tag}] epoch {record.epoch}: train loss {record.train_loss:.4f}, "
              f"val top-1 {record.val_acc:.2f}%, lr {record.lr:.3g}, {record.seconds:.1f}s", flush=True)
        if self.writer is not None:
            for name in ("train_loss", "val_acc", "val_loss", "lr"):
                self.writer.add_scalar(name, getattr(record, name), record.epoch)
            self.writer.flush()
        self.seconds += time.perf_counter() - start

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def run_job(params: dict[str, Any], on_epoch=None) -> dict[str, Any]:
    """Run one job of the pipeline; returns the final-result dict (without NNI)."""
    start = time.perf_counter()
    config = load_config(params["workspace"])
    if config.threads:
        torch.set_num_threads(config.threads)
    stage = params["stage"]
    identity = {"job": params["job"], "stage": stage, "variant": params.get("variant", ""),
                "genome": params.get("genome", "")}
    if stage == "prepare":
        figures = prepare(config, on_epoch=on_epoch)
        result = {"default": figures["pruned_val_acc"], "test_acc": figures["pruned_test_acc"], **figures}
    else:
        genome = genome_from_string(params["genome"]) if params.get("genome") else None
        seed = params.get("seed", config.seed)
        keep = stage in ("baseline", "final") and seed == config.seed  # the model `safs export` reads
        outcome = run_candidate(config, genome, params["hparams"], int(params["epochs"]),
                                bool(params["train_scales"]), float(params.get("data_fraction", 1.0)),
                                on_epoch=on_epoch, seed=seed,
                                save_as=f"{stage}_{params['variant']}.pt" if keep else None)
        # a run that diverged late still scores its best epoch before the divergence ("diverged" says so)
        result = {"default": outcome["val_acc"],
                  **{k: outcome[k] for k in ("val_acc", "late_val_acc", "test_acc", "density", "best_epoch",
                                             "epochs", "seed", "diverged", "failure", "timings")}}
    return {**result, **identity, "seconds": time.perf_counter() - start}


def _write_marker(params: dict[str, Any], marker: dict[str, Any]) -> None:
    path = job_marker(params["workspace"], params["job"])
    atomic_write(path, lambda handle: handle.write(json.dumps(marker).encode()))


def mark_started(params: dict[str, Any], parameter_id: int | None) -> dict[str, Any] | None:
    """Record which NNI trial runs this job; return the job's result if it already finished.

    The marker lets the tuner tell whose trial died without a result (NNI 3.0's trial_end
    may name another trial's parameters at concurrency > 1). A finished result is returned
    because ``nnictl resume`` re-runs every trial still marked RUNNING, including ones that
    had already reported: they re-report instead of training again.
    """
    path = job_marker(params["workspace"], params["job"])
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous.get("result") is not None:
            return previous["result"]
    _write_marker(params, {"trial_job_id": os.environ.get("NNI_TRIAL_JOB_ID"), "parameter_id": parameter_id,
                           "pid": os.getpid(), "started": time.time()})
    return None


def main(argv: list[str] | None = None) -> int:
    started = psutil.Process().create_time()
    startup = time.time() - started  # interpreter start and imports, before any work
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
    identity = {"parameter_id": channel.parameter_id if channel else None, "job": params.get("job"),
                "stage": params.get("stage"), "variant": params.get("variant", ""),
                "genome": params.get("genome", "")}
    reporter = _EpochReporter(f"{params.get('stage')} job {params.get('job')}", channel)

    def report_final(value: dict[str, Any]) -> None:
        print(f"final: {json.dumps(value)}", flush=True)  # trial.log (and the console when run by hand)
        if channel is not None:
            channel.report(value, final=True)

    try:
        # One job, one evaluation: after `nnictl resume` NNI may re-run a job's trial while the
        # tuner re-issues it too. The second trial waits here for the first and re-reports its
        # result; if the first died, the OS released its lock and the job runs again.
        with job_lock(params["workspace"], params["job"]):
            finished = mark_started(params, identity["parameter_id"])
            if finished is None:
                result = run_job(params, on_epoch=reporter)
                final = {**result, **identity}
                _write_marker(params, {"trial_job_id": os.environ.get("NNI_TRIAL_JOB_ID"), "result": final})
    except Exception as err:  # report, then fail visibly
        traceback.print_exc(file=sys.stdout)  # trial.log, which the portal shows
        report_final({"default": 0.0, "failed": f"{type(err).__name__}: {err}", **identity})
        return 1
    finally:
        reporter.close()
    if finished is not None:
        print(f"job {params.get('job')} already finished; reporting its result again", flush=True)
        report_final(finished)
        return 0
    start = time.perf_counter()
    report_final(final)
    timings = {"startup": startup, **result.get("timings", {}),
               "reporting": reporter.seconds + time.perf_counter() - start}
    print(f"timings: {json.dumps(timings)}", flush=True)
    return 0


if __name__ == "__main__":
    exit_code = main()
    # everything is written, closed and unlocked by now: skip the interpreter's teardown, which
    # costs ~0.3 s per trial once torch is loaded
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
