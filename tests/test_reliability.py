"""Faults a long search meets: races, revived weights, crashing and repeated trials."""
import json
import multiprocessing
import os
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from nni_safs.method.contract import JobSpec, Stage
from nni_safs.models import build_model
from nni_safs.pruning import MaskHolder, MaskViolationError, magnitude_prune
from nni_safs.settings.config import SafsConfig
from nni_safs.storage.checkpoints import load_checkpoint
from nni_safs.storage.workspace import WorkspaceConfigError, WorkspaceOwnedError, open_workspace, resolve_paths
from nni_safs.training.jobs import prepare
from nni_safs.training.loop import fine_tune


def tiny(workspace, **overrides):
    return SafsConfig(**{"model": "lenet5", "dataset": "synthetic", "workspace": str(workspace), "device": "cpu",
                         "dense_epochs": 2, "batch_size": 64, "scope": "lamp", **overrides})


def _prepare_in_child(workspace: str, queue) -> None:
    messages = []
    prepare(tiny(workspace), log=messages.append)
    queue.put(messages)


def test_two_racing_prepares_train_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_prepare_in_child, args=(str(tmp_path), queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    logs = [queue.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    trained = [log for log in logs if any("training dense" in line for line in log)]
    reused = [log for log in logs if any("already prepared" in line for line in log)]
    assert len(trained) == 1 and len(reused) == 1, logs
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["dense.pt", "pruned.pt"]
    assert not list(tmp_path.glob("*.tmp"))


def test_revived_weights_fail_the_run_loudly(monkeypatch):
    torch.manual_seed(0)
    model = build_model("lenet5")
    masks = magnitude_prune(model, 0.9, "layer")
    data = DataLoader(TensorDataset(torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))), batch_size=32)
    # a broken holder that keeps nothing at zero: Adam then revives pruned weights
    monkeypatch.setattr(MaskHolder, "attach", lambda self, optimizer: self)
    with pytest.raises(MaskViolationError, match="weight"):
        fine_tune(model, data, data, {"optimizer": "adam", "lr": 0.01}, epochs=2, masks=masks)


def write_job(tmp_path, **params):
    config = open_workspace(tiny(tmp_path / "ws"))
    prepare(config, log=lambda message: None)
    job = {"stage": "search", "variant": "lahc", "job": 7, "workspace": config.workspace,
           "genome": "act1=swish;act2=srs;act3=gelu;act4=elu", "hparams": config.hparams,
           "train_scales": False, "epochs": 1, "data_fraction": 1.0, **params}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    return config, path


def key_of(config, path) -> str:
    """The key of the job in ``path`` (what its marker and lock are named by)."""
    return JobSpec.from_params(json.loads(path.read_text())).key(config.to_dict())


def run_trial(path):
    return subprocess.run([sys.executable, "-m", "nni_safs.trial", "--params", str(path)],
                          capture_output=True, text=True, timeout=300)


def test_a_crashing_trial_reports_a_failure_and_exits_nonzero(tmp_path):
    _, path = write_job(tmp_path, genome="act1=swish;act9=relu")
    out = run_trial(path)
    assert out.returncode == 1
    assert "unknown activation slot" in out.stdout + out.stderr


def test_a_finished_job_is_reported_again_not_retrained(tmp_path):
    config, path = write_job(tmp_path)
    first = run_trial(path)
    assert first.returncode == 0, first.stderr
    marker = json.loads((tmp_path / "ws" / "jobs" / f"{key_of(config, path)}.json").read_text())
    assert marker["result"]["job"] == 7 and marker["result"]["stage"] == "search"
    again = run_trial(path)
    assert again.returncode == 0
    assert "already finished" in again.stdout
    assert "epoch 1" not in again.stdout  # no training the second time


def test_a_stored_result_answers_only_a_job_of_its_own_spec(tmp_path):
    """A second run numbers its jobs differently: job 7 may then be another genome. Its stored
    result must not answer it; an equal spec under another number reuses it, as that job's."""
    config, path = write_job(tmp_path)
    first = run_trial(path)
    assert first.returncode == 0, first.stderr
    reported = json.loads(first.stdout.split("final: ", 1)[1].splitlines()[0])
    other = dict(json.loads(path.read_text()), genome="act1=elu;act2=elu;act3=elu;act4=elu")
    path.write_text(json.dumps(other))  # the same number, another spec
    second = run_trial(path)
    assert second.returncode == 0, second.stderr
    assert "epoch 1" in second.stdout and "already finished" not in second.stdout  # trained, not reused
    assert '"genome": "act1=elu;act2=elu;act3=elu;act4=elu"' in second.stdout
    same = dict(json.loads(path.read_text()), genome=reported["genome"], job=11)
    path.write_text(json.dumps(same))  # another number, the first job's spec
    third = run_trial(path)
    assert third.returncode == 0 and "epoch 1" not in third.stdout
    again = json.loads(third.stdout.split("final: ", 1)[1].splitlines()[0])
    assert again["job"] == 11 and again["default"] == reported["default"] and again["genome"] == reported["genome"]


def test_pruned_checkpoint_of_other_settings_is_refused(tmp_path):
    config = open_workspace(tiny(tmp_path))
    prepare(config, log=lambda message: None)
    with pytest.raises(ValueError, match="scope: requested 'layer', checkpoint has 'lamp'"):
        prepare(tiny(tmp_path, scope="layer"))
    assert load_checkpoint(tmp_path / "pruned.pt")["meta"]["scope"] == "lamp"


def test_a_second_trial_of_a_running_job_waits_and_re_reports_its_result(tmp_path):
    # After `nnictl resume` NNI may re-run a job's trial while the tuner re-issues it: the
    # second trial must wait for the first and re-report its result, not train again
    from nni_safs.storage.workspace import job_lock, job_marker
    config, path = write_job(tmp_path)
    key = key_of(config, path)
    lock = job_lock(config.workspace, key)
    with lock:  # the first trial, still training
        second = subprocess.Popen([sys.executable, "-m", "nni_safs.trial", "--params", str(path)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            second.wait(timeout=15)  # blocked on the lock, not training
        spec = JobSpec.from_params(json.loads(path.read_text()))
        result = {"default": 12.5, "job": 7, "stage": "search", "genome": spec.genome, "test_acc": 11.0}
        job_marker(config.workspace, key).write_text(json.dumps({"spec": spec.identity(), "result": result}))
    stdout, stderr = second.communicate(timeout=120)
    assert second.returncode == 0, stderr
    assert "already finished" in stdout and "epoch 1" not in stdout
    assert '"default": 12.5' in stdout  # the first trial's result, reported again


def test_a_second_trial_runs_the_job_when_the_first_died(tmp_path):
    config, path = write_job(tmp_path)
    first = subprocess.Popen([sys.executable, "-c", "import sys, time; from nni_safs.storage.workspace import job_lock; "
                              f"job_lock({config.workspace!r}, {key_of(config, path)!r}).acquire(); "
                              "print('locked', flush=True); "
                              "time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().strip() == "locked"
    first.kill()  # dies holding the lock, without a result
    first.wait()
    out = run_trial(path)
    assert out.returncode == 0, out.stderr
    assert "epoch 1" in out.stdout and "already finished" not in out.stdout


def test_dense_training_keeps_activation_scales_at_one(tmp_path):
    config = open_workspace(tiny(tmp_path))
    prepare(config, log=lambda message: None)
    for name in ("dense.pt", "pruned.pt"):
        state = load_checkpoint(tmp_path / name)["state"]
        scales = {k: float(v) for k, v in state.items() if k.endswith((".alpha", ".beta"))}
        assert len(scales) == 8 and set(scales.values()) == {1.0}, (name, scales)


def test_the_baseline_keeps_the_models_own_activation(tmp_path):
    from nni_safs.models import MODELS, register_model
    from nni_safs.models.lenet import LeNet5
    from nni_safs.training.jobs import run_candidate

    @register_model("lenet5_tanh_test", overwrite=True, in_channels=1, image_size=28, act="tanh",
                    hparams={"optimizer": "adam", "lr": 1e-3})
    def lenet5_tanh(num_classes, in_channels, image_size, act):
        return LeNet5(num_classes, in_channels, image_size, act)

    try:
        config = open_workspace(tiny(tmp_path, model="lenet5_tanh_test"))
        prepare(config, log=lambda message: None)
        run_candidate(config, None, config.hparams, 1, train_scales=False, save_as="baseline_default.pt")
        genome = load_checkpoint(tmp_path / "baseline_default.pt")["meta"]["genome"]
        assert set(genome.values()) == {"tanh"}
    finally:
        MODELS._entries.pop("lenet5_tanh_test")


def test_a_late_divergence_reports_the_best_epoch_before_it(tmp_path, monkeypatch):
    import math

    from nni_safs.method.contract import JobSpec, Status
    from nni_safs.training import loop as training
    from nni_safs.training.jobs import run_job
    _, path = write_job(tmp_path, epochs=4)
    real, calls = training._train_epoch, []

    def diverging(*args):
        calls.append(1)
        return math.nan if len(calls) == 3 else real(*args)

    monkeypatch.setattr(training, "_train_epoch", diverging)
    result = run_job(JobSpec.from_params(json.loads(path.read_text())))
    assert result.status == Status.DIVERGED and "epoch 3" in result.reason
    assert result.metrics["epochs"] == 2 and result.score == result.metrics["val_acc"] > 0


def test_a_workspace_refuses_other_settings_and_names_the_keys(tmp_path):
    open_workspace(tiny(tmp_path))
    (tmp_path / "pruned.pt").write_bytes(b"computed")  # settings are write-once once a result exists
    before = (tmp_path / "config.json").read_text()
    open_workspace(tiny(tmp_path))  # the same settings: reopened (resume, a second trial)
    with pytest.raises(WorkspaceConfigError, match=r"dense_epochs: workspace has 2, requested 5; "
                                                   r"ratio: workspace has 0.99, requested 0.9"):
        open_workspace(tiny(tmp_path, dense_epochs=5, ratio=0.9))
    assert (tmp_path / "config.json").read_text() == before
    # a workspace written before a key existed: the key reads as its default
    older = json.loads(before)
    del older["precision"]
    (tmp_path / "config.json").write_text(json.dumps(older))
    open_workspace(tiny(tmp_path))
    with pytest.raises(WorkspaceConfigError, match="precision: workspace has 'auto', requested 'fp32'"):
        open_workspace(tiny(tmp_path, precision="fp32"))


def test_a_data_loader_failing_mid_epoch_fails_the_trial_and_leaves_the_workspace_usable(tmp_path, monkeypatch,
                                                                                        capsys):
    from nni_safs.data.splits import TransformSubset
    from nni_safs.integration import trial
    config, path = write_job(tmp_path, stage="final", variant="safs")
    real, calls = TransformSubset.__getitems__, []

    def flaky(self, indices):  # the DataLoader fetches a whole batch at once
        calls.append(indices)
        if len(calls) == 3:  # mid-way through the first epoch
            raise OSError("input/output error reading the dataset")
        return real(self, indices)

    monkeypatch.setattr(TransformSubset, "__getitems__", flaky)
    assert trial.main(["--params", str(path)]) == 1
    out = capsys.readouterr().out  # trial.log
    assert "OSError: input/output error reading the dataset" in out  # the traceback
    assert '"status": "failed", "reason": "OSError: input/output error reading the dataset"' in out  # reported
    workspace = tmp_path / "ws"
    marker = workspace / "jobs" / f"{key_of(config, path)}.json"
    assert "result" not in json.loads(marker.read_text())
    assert not (workspace / "final_safs.pt").exists() and not list(workspace.glob("*.tmp"))
    monkeypatch.setattr(TransformSubset, "__getitems__", real)  # the cause fixed: the job runs again
    assert trial.main(["--params", str(path)]) == 0
    assert json.loads(marker.read_text())["result"]["stage"] == "final"
    assert load_checkpoint(workspace / "final_safs.pt")["meta"]["genome"]


def test_a_corrupted_pruned_checkpoint_fails_the_trial_naming_the_file(tmp_path, capsys):
    from nni_safs.integration import trial
    config, path = write_job(tmp_path)
    pruned = tmp_path / "ws" / "pruned.pt"
    good = pruned.read_bytes()
    pruned.write_bytes(good[:1000])
    assert trial.main(["--params", str(path)]) == 1
    assert f"checkpoint '{pruned}' is unreadable" in capsys.readouterr().out
    pruned.write_bytes(good)  # restored (or recomputed by prepare after deleting it): usable again
    assert trial.main(["--params", str(path)]) == 0


def test_a_trial_that_dies_in_its_imports_still_reports_a_failure(tmp_path):
    _, path = write_job(tmp_path)
    broken = tmp_path / "broken"
    (broken / "torch").mkdir(parents=True)
    (broken / "torch" / "__init__.py").write_text("raise ImportError('torch is broken here')\n")
    out = subprocess.run([sys.executable, "-m", "nni_safs.trial", "--params", str(path)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(broken)})
    assert out.returncode == 1
    final = json.loads(out.stdout.split("final: ", 1)[1].splitlines()[0])
    assert final["status"] == "failed" and "torch is broken here" in final["reason"] and final["job"] == 7


def test_a_workspace_is_one_runs_record(tmp_path):
    """A run that computed something owns the workspace: another run is refused with what to do;
    the owner itself (a resume) opens it again."""
    open_workspace(tiny(tmp_path / "ws"), run="experiment A")
    (tmp_path / "ws" / "dense.pt").write_bytes(b"computed")
    with pytest.raises(WorkspaceOwnedError) as refused:
        open_workspace(tiny(tmp_path / "ws"), run="experiment B")
    for hint in ("experiment A", "safs results", "--set workspace=", "nnictl resume A", "delete"):
        assert hint in str(refused.value)
    open_workspace(tiny(tmp_path / "ws"), run="experiment A")  # its own resume
    with pytest.raises(WorkspaceConfigError, match="dense_epochs"):
        open_workspace(tiny(tmp_path / "ws", dense_epochs=9), run="experiment A")


def test_a_workspace_where_nothing_was_computed_takes_new_settings(tmp_path):
    """A prepare that failed (no checkpoint, no result) leaves nothing to protect: a retry with
    other settings (e.g. device=cpu after cuda) takes the workspace."""
    open_workspace(tiny(tmp_path / "ws"), run="experiment A")
    (tmp_path / "ws" / "summary.json").write_text(json.dumps({"finished": True, "failure": "prepare failed"}))
    config = open_workspace(tiny(tmp_path / "ws", dense_epochs=9), run="experiment B")
    assert json.loads((tmp_path / "ws" / "config.json").read_text())["dense_epochs"] == 9 == config.dense_epochs
    assert json.loads((tmp_path / "ws" / "run.json").read_text())["run"] == "experiment B"
    assert not (tmp_path / "ws" / "summary.json").exists()  # the failed run's report went with it


def test_a_jobs_key_is_the_same_for_settings_that_went_through_nnis_manager(tmp_path):
    """The tuner's classArgs come through NNI's Node manager, whose JSON writes 1.0 as 1; the
    trial reads the workspace's config.json. Both must name a job by the same key."""
    from pathlib import Path

    import nni_node
    default = Path(__file__).resolve().parents[1] / "experiment_configs" / "lenet5_mnist_safs.yml"
    import yaml
    class_args = {**yaml.safe_load(default.read_text())["tuner"]["classArgs"], "workspace": str(tmp_path / "ws")}
    assert any(isinstance(v, float) and v.is_integer() for v in class_args.values())  # e.g. 1.0
    through_node = subprocess.run([str(Path(nni_node.__path__[0]) / "node"), "-e",
                                   "process.stdout.write(JSON.stringify(JSON.parse(require('fs').readFileSync(0))))"],
                                  input=json.dumps(class_args), capture_output=True, text=True, check=True).stdout
    tuner_side = resolve_paths(SafsConfig.from_dict(json.loads(through_node))).to_dict()
    trial_side = open_workspace(SafsConfig.from_dict(class_args)).to_dict()
    spec = JobSpec(job=0, stage=Stage.PREPARE, variant="", workspace=str(tmp_path / "ws"), hparams={"lr": 1.0})
    assert spec.key(tuner_side) == spec.key(trial_side)
