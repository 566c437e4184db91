"""A trial's TensorBoard events, read back with TensorBoard's own reader (no NNI: the experiment
in tests/test_portal.py checks real trials)."""
import pytest
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import metadata

from nni_safs.integration.trial_tensorboard import TrialTensorBoard
from nni_safs.method.contract import JobResult, JobSpec, Stage, Status
from nni_safs.training.loop import EpochRecord


def _read(folder):
    runs = EventMultiplexer().AddRunsFromDirectory(str(folder))
    runs.Reload()
    content = runs.PluginRunToTagToContent(metadata.PLUGIN_NAME)
    return runs, {run: metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
                  for run, tags in content.items()}


def test_a_trial_writes_its_hparams_first_and_its_results_last(tmp_path, monkeypatch):
    monkeypatch.setenv("NNI_OUTPUT_DIR", str(tmp_path / "trial"))
    monkeypatch.setenv("NNI_TRIAL_JOB_ID", "Ab3dE")
    spec = JobSpec(5, Stage.HPO, "safs", "/ws", genome="act1=swish;act2=srs", seed=3, epochs=2,
                   hparams={"optimizer": "sgd", "lr": 0.01, "nesterov": True, "milestones": [2, 4]},
                   train_scales=True, data_fraction=0.5)
    board = TrialTensorBoard.for_trial(spec)
    _, starts = _read(tmp_path)  # a running trial has its row already
    assert list(starts) == ["trial/tensorboard"]
    info = starts["trial/tensorboard"]
    assert info.group_name == "Ab3dE"
    hparams = {name: getattr(value, value.WhichOneof("kind")) for name, value in info.hparams.items()}
    assert hparams == {"stage": "hpo", "variant": "safs", "job": 5, "seed": 3, "epochs": 2, "data_fraction": 0.5,
                       "train_scales": True, "op/act1": "swish", "op/act2": "srs", "hp/optimizer": "sgd",
                       "hp/lr": 0.01, "hp/nesterov": True, "hp/milestones": "[2, 4]"}

    for epoch, acc in enumerate((40.0, 55.0)):
        board.epoch(EpochRecord(epoch + 1, 1.0 / (epoch + 1), acc, 0.5, 0.01, 1.0))
    board.finish(JobResult(5, Stage.HPO, Status.OK, 55.0, variant="safs", genome=spec.genome,
                           metrics={"val_acc": 55.0, "test_acc": 54.0, "density": 0.01, "seed": 3,
                                    "late_val_acc": float("nan")}))
    board.close()
    runs, _ = _read(tmp_path)
    scalars = {tag: [e.value for e in runs.Scalars("trial/tensorboard", tag)]
               for tag in runs.GetAccumulator("trial/tensorboard").Tags()["scalars"]}
    assert scalars["val_acc"] == [40.0, 55.0]
    # the result's numbers only: a non-finite one is left out, as are the job's bookkeeping fields
    assert {tag: values for tag, values in scalars.items() if tag.startswith("result/")} == \
        {"result/score": [55.0], "result/val_acc": [55.0], "result/test_acc": [54.0],
         "result/density": [pytest.approx(0.01)]}  # stored as float32
