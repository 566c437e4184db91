"""What a trial writes for TensorBoard: its epochs' curves, and its hyperparameters and results
in the form of TensorBoard's HParams view.

NNI 3.0's portal starts TensorBoard on each chosen trial's ``NNI_OUTPUT_DIR/tensorboard`` (its
``nniTensorboardManager``), so that is where the events go: one event file per trial holding
a session start (:func:`tensorboard.plugins.hparams.summary_v2.hparams_pb`, the hyperparameters
of :func:`hparams_of`), the scalars of every epoch and, at the end, the result's scalars under
``result/``. No experiment summary is written: TensorBoard then builds the HParams table from
every trial's session start (the union of their hyperparameters, strings as filterable value
lists) and the trials' scalars, so trials of every stage share one table, filterable by stage.
"""
from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING

from nni_safs.method.contract import JobResult, JobSpec
from nni_safs.method.genomes import genome_from_string

if TYPE_CHECKING:
    from nni_safs.training.loop import EpochRecord

EPOCH_SCALARS = ("train_loss", "val_acc", "val_loss", "lr")  # EpochRecord fields, one curve each
RESULT_SCALARS = ("val_acc", "late_val_acc", "test_acc", "density", "seconds")  # result/NAME beside result/score


def hparams_of(spec: JobSpec) -> dict[str, bool | float | str]:
    """The job's hyperparameters as HParams columns: stage, variant, job, seed, epochs, data
    fraction, trainable scales, ``op/SLOT`` per slot of its genome (none on the model's own
    activations) and ``hp/NAME`` per training hyperparameter (a value that is neither a number,
    a bool nor a string as its JSON)."""
    values: dict[str, bool | float | str] = {
        "stage": spec.stage.value, "variant": spec.variant, "job": spec.job, "seed": spec.seed,
        "epochs": spec.epochs, "data_fraction": spec.data_fraction, "train_scales": spec.train_scales}
    values.update({f"op/{slot}": op for slot, op in genome_from_string(spec.genome).items()})
    values.update({f"hp/{name}": value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
                   for name, value in spec.hparams.items()})
    return values


def result_scalars(result: JobResult) -> dict[str, float]:
    """The result's numbers under ``result/``: its score and those of :data:`RESULT_SCALARS` it has."""
    values = {"score": result.score, **{name: result.metrics.get(name) for name in RESULT_SCALARS}}
    return {f"result/{name}": float(value) for name, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


class TrialTensorBoard:
    """The trial's event file in ``logdir``, opened with its session start."""

    def __init__(self, logdir: str, spec: JobSpec) -> None:
        from tensorboard.plugins.hparams import summary_v2  # not hparams.api: that one imports TensorFlow
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(logdir)
        # one row per trial: NNI's trial id names the session (identical jobs would share a row)
        trial = os.environ.get("NNI_TRIAL_JOB_ID") or f"job {spec.job}"
        self.writer.file_writer.add_summary(summary_v2.hparams_pb(hparams_of(spec), trial_id=trial))
        self.writer.flush()

    def epoch(self, record: EpochRecord) -> None:
        for name in EPOCH_SCALARS:
            self.writer.add_scalar(name, getattr(record, name), record.epoch)
        self.writer.flush()

    def finish(self, result: JobResult) -> None:
        """Write the result's scalars: the HParams view's metric columns."""
        for tag, value in result_scalars(result).items():
            self.writer.add_scalar(tag, value)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    @classmethod
    def for_trial(cls, spec: JobSpec) -> TrialTensorBoard | None:
        """In NNI's trial output folder, where the portal's TensorBoard button looks; None outside NNI."""
        output_dir = os.environ.get("NNI_OUTPUT_DIR")
        return cls(os.path.join(output_dir, "tensorboard"), spec) if output_dir else None
