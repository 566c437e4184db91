"""SafsTuner driven in-process through NNI's own MsgDispatcher, as NNI's test_msg_dispatcher.py
drives a tuner: commands in, commands out, with the manager's REST API served by a fake
passed to the tuner. Covers in seconds what the nnictl tests cover in minutes: credits,
trial_end attribution through the job markers, import_data and resume."""
import json
import random

import pytest
from nni.common import dump, load
from nni.runtime.msg_dispatcher import MsgDispatcher
from nni.runtime.tuner_command_channel import CommandType

from nni_safs.contract import Status
from nni_safs.manager_api import ManagerClient
from nni_safs.tuner import SafsTuner
from nni_safs.workspace import job_marker

from conftest import SMALL, JsonHandler, serving


class FakeManagerState:
    def __init__(self, max_trials: int) -> None:
        self.profile = {"params": {"maxTrialNumber": max_trials, "trialCodeDirectory": "/"}}
        self.trials: list[dict] = []  # what GET /trial-jobs answers


@pytest.fixture
def manager():
    state = FakeManagerState(100)

    class Handler(JsonHandler):
        def do_GET(self):
            self.reply(state.profile if self.path.endswith("/experiment") else state.trials)

        def do_PUT(self):
            assert self.path.endswith("/experiment?update_type=MAX_TRIAL_NUM")
            state.profile = self.body()
            self.reply({})

    with serving(Handler) as url:
        state.client = ManagerClient(f"{url}/api/v1/nni")
        yield state


class Nni:
    """NNI's dispatcher around a SafsTuner; what it would send to the manager is kept in ``sent``."""

    def __init__(self, tuner: SafsTuner) -> None:
        self.dispatcher = MsgDispatcher("ws://_unittest_placeholder_", tuner)
        self.sent: list[tuple] = []
        self.dispatcher.send = lambda command, data: self.sent.append((command, data))
        self.dispatcher.process_command(CommandType.Initialize, {})

    def request(self, count: int) -> None:
        self.dispatcher.process_command(CommandType.RequestTrialJobs, count)

    def new_trials(self) -> list[dict]:
        """Parameter records sent since the last call (NewTrialJob, from either path)."""
        records = [load(data) for command, data in self.sent if command == CommandType.NewTrialJob]
        self.sent = [(c, d) for c, d in self.sent if c != CommandType.NewTrialJob]
        return records

    def final(self, record: dict, value: dict) -> None:
        self.dispatcher.process_command(CommandType.ReportMetricData, {
            "parameter_id": record["parameter_id"], "trial_job_id": f"T{record['parameter_id']}",
            "type": "FINAL", "sequence": 0, "value": dump(value)})

    def trial_end(self, parameter_id: int, trial_job_id: str, event: str) -> None:
        self.dispatcher.process_command(CommandType.TrialEnd, {
            "trial_job_id": trial_job_id, "event": event, "hyper_params": dump({"parameter_id": parameter_id})})


def result_for(params: dict) -> dict:
    score = 50.0 + params["genome"].count("swish")
    return {"default": score, "val_acc": score, "test_acc": score - 1, "density": 0.01, "job": params["job"],
            "stage": params["stage"], "genome": params["genome"]}


@pytest.mark.parametrize("late_results", [0.0, 0.3])
def test_a_whole_pipeline_through_nnis_dispatcher_ends_at_the_exact_trial_count(tmp_path, manager, late_results):
    """NNI's manager played faithfully: trials start while a slot is free, and each trial's end
    asks for one job. A result sends its slot's next job ahead, so the request that follows
    is answered by it; NNI may also pass a result on after the trial's end (``late_results``
    of them), and still no job runs twice and no form is left over."""
    rng = random.Random(1)
    nni = Nni(SafsTuner(**SMALL, workspace=str(tmp_path / "ws"), manager=manager.client))
    nni.request(2)  # concurrency 2: only prepare can start, the other request becomes a credit
    waiting = nni.new_trials()
    assert [r["parameters"]["stage"] for r in waiting] == ["prepare"]
    assert any(command == CommandType.NoMoreTrialJobs for command, _ in nni.sent)
    running, finished, waiting_at_end = [], 0, 0
    while waiting or running:
        while waiting and len(running) < 2:
            running.append(waiting.pop(0))
        record = running.pop(rng.randrange(len(running)))
        late = rng.random() < late_results
        if not late:
            nni.final(record, result_for(record["parameters"]))
            waiting += nni.new_trials()  # credits paid, and this slot's next job sent ahead
        waiting_at_end += bool(waiting)
        nni.trial_end(record["parameter_id"], f"T{record['parameter_id']}", "SUCCEEDED")
        finished += 1
        nni.request(1)
        if late:
            nni.final(record, result_for(record["parameters"]))
        waiting += nni.new_trials()
        assert len(waiting) <= 2
    tuner = nni.dispatcher.tuner
    assert tuner.pipeline.finished and not tuner.pipeline.failure
    assert finished == len(tuner.pipeline.jobs) and tuner.sent_ahead == 0
    assert manager.profile["params"]["maxTrialNumber"] == finished  # the experiment ends DONE here
    assert json.loads((tmp_path / "ws" / "summary.json").read_text())["finished"]
    if not late_results:  # barriers aside, the next job was always there when a trial ended
        assert waiting_at_end >= 0.8 * finished


def test_a_trial_that_died_is_found_through_its_marker_even_when_nni_names_another(tmp_path, manager):
    nni = Nni(SafsTuner(**SMALL, workspace=str(tmp_path / "ws"), manager=manager.client))
    nni.request(1)
    (prepare,) = nni.new_trials()
    nni.final(prepare, {"default": 20.0, "job": prepare["parameters"]["job"]})
    nni.request(2)
    a, b = nni.new_trials()
    # both trials started (each marker names its NNI trial); a's was killed, and NNI 3.0
    # reports the end with b's parameter id
    job_a = a["parameters"]["job"]
    job_marker(tmp_path / "ws", job_a).parent.mkdir(exist_ok=True)
    job_marker(tmp_path / "ws", job_a).write_text(json.dumps({"trial_job_id": "Tdead"}))
    job_marker(tmp_path / "ws", b["parameters"]["job"]).write_text(json.dumps({"trial_job_id": "Tb"}))
    manager.trials = [{"trialJobId": "Tdead", "status": "FAILED"}, {"trialJobId": "Tb", "status": "RUNNING"}]
    nni.trial_end(b["parameter_id"], "Tdead", "FAILED")
    tuner = nni.dispatcher.tuner
    lost = tuner.pipeline.results[job_a]
    assert lost.status == Status.LOST and lost.reason == "the trial ended without reporting a result"
    assert b["parameters"]["job"] not in tuner.pipeline.results  # still running, not blamed


def test_resume_requeues_lost_jobs_and_folds_results_nni_replays(tmp_path, manager, monkeypatch):
    monkeypatch.setenv("NNI_CHECKPOINT_DIRECTORY", str(tmp_path / "ckpt"))
    (tmp_path / "ckpt").mkdir()
    nni = Nni(SafsTuner(**SMALL, workspace=str(tmp_path / "ws"), manager=manager.client))
    nni.request(1)
    (prepare,) = nni.new_trials()
    nni.final(prepare, {"default": 20.0, "job": prepare["parameters"]["job"]})
    nni.request(3)
    cancelled, running, finished = nni.new_trials()
    # the experiment stops; NNI recorded a cancelled trial for one job and still runs another
    manager.trials = [{"trialJobId": "T0", "status": "SUCCEEDED", "hyperParameters": [dump(prepare)]}]
    manager.trials += [{"trialJobId": f"T{r['parameter_id']}", "status": status, "hyperParameters": [dump(r)]}
                       for r, status in ((cancelled, "USER_CANCELED"), (running, "RUNNING"),
                                         (finished, "SUCCEEDED"))]

    resumed = Nni(SafsTuner(**SMALL, workspace=str(tmp_path / "ws"), manager=manager.client))
    resumed.dispatcher.load_checkpoint()
    tuner = resumed.dispatcher.tuner
    assert tuner.pipeline.jobs.keys() == nni.dispatcher.tuner.pipeline.jobs.keys()
    # the finished trial's result reached NNI while the tuner was down: NNI replays it
    resumed.dispatcher.process_command(CommandType.ImportData, [
        {"parameter": finished["parameters"], "value": dump(result_for(finished["parameters"]))}])
    assert finished["parameters"]["job"] in tuner.pipeline.results
    resumed.request(2)
    again, new = resumed.new_trials()
    # the cancelled job runs again (one trial more than one per job); the RUNNING one NNI re-runs
    # itself and the finished one is not repeated
    assert again["parameters"]["job"] == cancelled["parameters"]["job"] and tuner.resubmitted == 1
    assert new["parameters"]["job"] not in {r["parameters"]["job"] for r in (prepare, cancelled, running, finished)}
