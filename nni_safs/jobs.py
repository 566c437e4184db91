"""What a job runs, the same in an NNI trial and in ``safs run``: one :class:`JobSpec` in, one
:class:`JobResult` out. The training itself (dense, pruning, fine-tuning) is
:func:`~nni_safs.workspace.prepare` and :func:`~nni_safs.workspace.run_candidate`.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from .activations import genome_from_string
from .contract import JobResult, JobSpec, Stage, Status
from .training import EpochRecord
from .workspace import load_config, model_file, prepare, run_candidate

KEPT_METRICS = ("val_acc", "late_val_acc", "test_acc", "density", "best_epoch", "epochs", "seed", "timings")


def run_job(spec: JobSpec, on_epoch: Callable[[EpochRecord], None] | None = None) -> JobResult:
    """Run one job of the pipeline (an exception propagates: the caller reports it as failed)."""
    start = time.perf_counter()
    config = load_config(spec.workspace)
    if config.threads:
        torch.set_num_threads(config.threads)
    if spec.stage == Stage.PREPARE:
        figures = prepare(config, on_epoch=on_epoch)
        result = JobResult(spec.job, spec.stage, Status.OK, figures["pruned_val_acc"],
                           metrics={"test_acc": figures["pruned_test_acc"], **figures})
    else:
        genome = genome_from_string(spec.genome) if spec.genome else None
        keep = spec.stage in (Stage.BASELINE, Stage.FINAL) and spec.seed == config.seed  # what `safs export` reads
        outcome = run_candidate(config, genome, spec.hparams, spec.epochs, spec.train_scales, spec.data_fraction,
                                on_epoch=on_epoch, seed=spec.seed,
                                save_as=model_file(spec.stage, spec.variant) if keep else None)
        # a run that diverged late still scores its best epoch before the divergence
        result = JobResult(spec.job, spec.stage, Status.DIVERGED if outcome["diverged"] else Status.OK,
                           outcome["val_acc"], outcome["failure"],
                           metrics={key: outcome[key] for key in KEPT_METRICS})
    result.variant, result.genome = spec.variant, spec.genome
    result.metrics["seconds"] = time.perf_counter() - start
    return result
