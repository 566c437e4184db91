"""SafsTuner driven in-process through NNI's own MsgDispatcher, as NNI's test_msg_dispatcher.py
drives a tuner: commands in, commands out, with the manager's REST API served by a fake
passed to the tuner. Covers in seconds what the nnictl tests cover in minutes: credits,
trial_end attribution through the job markers, import_data and resume."""
import json
import queue
import random
import threading
import time

import pytest
from conftest import SMALL, JsonHandler, serving
from nni.common import dump, load
from nni.runtime.msg_dispatcher import MsgDispatcher
from nni.runtime.tuner_command_channel import CommandType

from nni_safs.integration.manager_api import ManagerClient
from nni_safs.integration.tuner import SafsTuner
from nni_safs.method.contract import Status


class FakeManagerState:
    def __init__(self, max_trials: int) -> None:
        self.profile = {"id": "fakeexp", "params": {"maxTrialNumber": max_trials, "trialCodeDirectory": "/", "trialConcurrency": 2}}
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
        state.client = ManagerClient(int(url.rsplit(":", 1)[1]))
        yield state


class Nni:
    """NNI's dispatcher around a SafsTuner; what it would send to the manager is kept in ``sent``."""

    def __init__(self, tuner: SafsTuner) -> None:
        self.dispatcher = MsgDispatcher("ws://_unittest_placeholder_", tuner)
        self.sent: list[tuple] = []
        self.lock = threading.Lock()  # the tuner may send from NNI's second thread (trial_end)

        def send(command, data):
            with self.lock:
                self.sent.append((command, data))
        self.dispatcher.send = send
        self.dispatcher.process_command(CommandType.Initialize, {})

    def request(self, count: int) -> None:
        self.dispatcher.process_command(CommandType.RequestTrialJobs, count)

    def new_trials(self) -> list[dict]:
        """Parameter records sent since the last call (NewTrialJob, from either path)."""
        self.dispatcher.tuner.flush()  # what the tuner's sender thread still has to send
        with self.lock:
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


def prepared(tmp_path, manager) -> tuple[Nni, dict]:
    """A tuner through NNI's dispatcher whose prepare job has reported (its slot's next job sent ahead)."""
    nni = Nni(SafsTuner(**SMALL, workspace=str(tmp_path / "ws"), manager=manager.client))
    nni.request(1)
    (prepare,) = nni.new_trials()
    nni.final(prepare, {"default": 20.0, "job": prepare["parameters"]["job"]})
    return nni, prepare


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
    nni.request(2)  # concurrency 2: only prepare can start, the other request is answered later
    waiting = nni.new_trials()
    assert [r["parameters"]["stage"] for r in waiting] == ["prepare"]
    tuner = nni.dispatcher.tuner
    told_no_more = lambda: any(command == CommandType.NoMoreTrialJobs for command, _ in nni.sent)  # noqa: E731
    assert not told_no_more() and tuner.credits  # a barrier is not the end: NNI's status stays RUNNING
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
        ended = tuner.pipeline.finished
        nni.request(1)
        assert ended or not told_no_more(), f"NNI told 'no more trials' after {finished} of the trials"
        if late:
            nni.final(record, result_for(record["parameters"]))
        waiting += nni.new_trials()
        assert len(waiting) <= 3  # two slots' jobs and at most one more waiting
    assert tuner.pipeline.finished and not tuner.pipeline.failure
    assert finished == len(tuner.pipeline.jobs)
    assert manager.profile["params"]["maxTrialNumber"] == finished  # the experiment ends DONE here
    assert json.loads((tmp_path / "ws" / "summary.json").read_text())["finished"]
    if not late_results:  # barriers aside, the next job was always there when a trial ended
        assert waiting_at_end >= 0.8 * finished


def test_a_trial_that_died_is_found_through_its_marker_even_when_nni_names_another(tmp_path, manager):
    nni = Nni(SafsTuner(**SMALL, workspace=str(tmp_path / "ws"), manager=manager.client))
    nni.request(1)
    (prepare,) = nni.new_trials()
    nni.final(prepare, {"default": 20.0, "job": prepare["parameters"]["job"]})  # its slot's next job goes ahead
    nni.request(1)  # prepare's end: the job asked for waits at NNI for the next slot
    a, b = nni.new_trials()
    # both trials started (each marker names its NNI trial); a's was killed, and NNI 3.0
    # reports the end with b's parameter id
    job_a = a["parameters"]["job"]
    marker = nni.dispatcher.tuner._marker  # the job's spec key names its marker
    marker(job_a).parent.mkdir(exist_ok=True)
    marker(job_a).write_text(json.dumps({"trial_job_id": "Tdead"}))
    marker(b["parameters"]["job"]).write_text(json.dumps({"trial_job_id": "Tb"}))
    manager.trials = [{"trialJobId": "Tdead", "status": "FAILED"}, {"trialJobId": "Tb", "status": "RUNNING"}]
    nni.trial_end(b["parameter_id"], "Tdead", "FAILED")
    tuner = nni.dispatcher.tuner
    lost = tuner.pipeline.results[job_a]
    assert lost.status == Status.LOST and lost.reason == "the trial ended without reporting a result"
    assert b["parameters"]["job"] not in tuner.pipeline.results  # still running, not blamed


def test_resume_requeues_lost_jobs_and_folds_results_nni_replays(tmp_path, manager, monkeypatch):
    monkeypatch.setenv("NNI_CHECKPOINT_DIRECTORY", str(tmp_path / "ckpt"))
    (tmp_path / "ckpt").mkdir()
    nni, prepare = prepared(tmp_path, manager)
    nni.request(2)
    cancelled, running, finished = nni.new_trials()
    # the experiment stops; NNI recorded a cancelled trial for one job and still runs another
    manager.trials = [{"trialJobId": "T0", "status": "SUCCEEDED", "hyperParameters": [dump(prepare)]}]
    manager.trials += [{"trialJobId": f"T{r['parameter_id']}", "status": status, "hyperParameters": [dump(r)]}
                       for r, status in ((cancelled, "USER_CANCELED"), (running, "RUNNING"),
                                         (finished, "SUCCEEDED"))]
    stale = nni.dispatcher.tuner._marker(cancelled["parameters"]["job"])  # names the cancelled trial
    stale.parent.mkdir(exist_ok=True)
    stale.write_text(json.dumps({"trial_job_id": f"T{cancelled['parameter_id']}"}))

    nni.dispatcher.tuner.close()  # as the stopped dispatcher's process would, at its end
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
    # the requeued job's old marker is gone: another trial's failed end cannot score its re-run
    assert not stale.exists()
    resumed.trial_end(new["parameter_id"], "Tother", "FAILED")
    assert again["parameters"]["job"] not in tuner.pipeline.results
    tuner.close()


def test_after_a_resume_a_re_run_that_dies_without_reporting_is_found_by_its_status(tmp_path, manager, monkeypatch):
    """NNI 3.0 sends no trial end for trials created before a resume: the tuner reads statuses."""
    from nni_safs.integration import tuner as tuner_module
    monkeypatch.setattr(tuner_module, "TRIAL_POLL_SECONDS", 0.2)
    monkeypatch.setenv("NNI_CHECKPOINT_DIRECTORY", str(tmp_path / "ckpt"))
    (tmp_path / "ckpt").mkdir()
    nni, prepare = prepared(tmp_path, manager)
    nni.request(1)
    a, b = nni.new_trials()
    manager.trials = [{"trialJobId": f"T{r['parameter_id']}", "status": status, "hyperParameters": [dump(r)]}
                      for r, status in ((prepare, "SUCCEEDED"), (a, "RUNNING"), (b, "RUNNING"))]
    nni.dispatcher.tuner.close()
    resumed = Nni(SafsTuner(**SMALL, workspace=str(tmp_path / "ws"), manager=manager.client))
    resumed.dispatcher.load_checkpoint()
    tuner = resumed.dispatcher.tuner
    # NNI re-runs both; a's re-run dies before it reports, and no trial end ever comes
    for record, trial, status in ((a, "Ra", "FAILED"), (b, "Rb", "RUNNING")):
        tuner._marker(record["parameters"]["job"]).parent.mkdir(exist_ok=True)
        tuner._marker(record["parameters"]["job"]).write_text(json.dumps({"trial_job_id": trial}))
        manager.trials.append({"trialJobId": trial, "status": status, "hyperParameters": [dump(record)]})
    deadline = time.monotonic() + 30
    while a["parameters"]["job"] not in tuner.pipeline.results:
        assert time.monotonic() < deadline, "the dead re-run was never scored"
        time.sleep(0.1)
    assert tuner.pipeline.results[a["parameters"]["job"]].status == Status.LOST
    assert b["parameters"]["job"] not in tuner.pipeline.results
    tuner.close()


def test_a_result_produced_for_another_spec_is_refused_not_folded_in(tmp_path, manager):
    nni, prepare = prepared(tmp_path, manager)
    nni.request(1)
    a, b = nni.new_trials()
    foreign = dict(result_for(a["parameters"]), genome="act1=elu;act2=elu;act3=elu;act4=elu", default=99.0)
    nni.final(a, foreign)  # a's job number, another genome's result (a second run's numbering)
    tuner = nni.dispatcher.tuner
    refused = tuner.pipeline.results[a["parameters"]["job"]]
    assert refused.status == Status.FAILED and refused.score == 0.0
    assert "refused a result produced for another spec" in refused.reason and "genome" in refused.reason
    other_key = dict(result_for(b["parameters"]), key="0" * 20)  # same names, another seed or settings
    nni.final(b, other_key)
    assert tuner.pipeline.results[b["parameters"]["job"]].status == Status.FAILED
    tuner.close()


def test_sends_to_nni_leave_the_lock_free_and_go_from_one_thread(tmp_path, manager):
    """NNI's sends retry for seconds and wait without bound: a callback decides under the lock,
    and the tuner's one sender thread sends after it, so other callbacks are not held up."""
    nni = Nni(SafsTuner(**SMALL, workspace=str(tmp_path / "ws"), manager=manager.client))
    tuner = nni.dispatcher.tuner
    nni.request(1)
    (prepare,) = nni.new_trials()
    record, release, senders = nni.dispatcher.send, threading.Event(), []

    def stuck(command, data):  # a send that hangs until released
        senders.append(threading.current_thread().name)
        release.wait(60)
        record(command, data)
    nni.dispatcher.send = stuck
    folded = threading.Event()
    threading.Thread(target=lambda: (nni.final(prepare, {"default": 20.0, "job": prepare["parameters"]["job"]}),
                                     folded.set())).start()
    assert folded.wait(10), "the result was not folded in while a send hung"
    assert tuner._lock.acquire(timeout=5), "the tuner's lock was held across a send"
    tuner._lock.release()
    release.set()
    assert len(nni.new_trials()) == 1 and senders == ["safs-sender"]
    tuner.close()


def test_a_manager_gone_mid_hand_out_is_no_failure_and_resume_hands_the_job_out(tmp_path, manager, monkeypatch):
    """``nnictl stop`` closes the manager while a result may still be folded in: NNI's channel
    raises when the tuner sends the slot's next job. The run must not fail-stop (the failure would
    be saved and ``nnictl resume`` would end at once); the job stays issued, and the resumed
    tuner hands it out as one NNI never recorded (no extra trial)."""
    monkeypatch.setenv("NNI_CHECKPOINT_DIRECTORY", str(tmp_path / "ckpt"))
    (tmp_path / "ckpt").mkdir()
    nni = Nni(SafsTuner(**SMALL, workspace=str(tmp_path / "ws"), manager=manager.client))
    nni.request(1)
    (prepare,) = nni.new_trials()

    def gone(command, data):
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 8080)")
    nni.dispatcher.send = gone
    nni.final(prepare, {"default": 20.0, "job": prepare["parameters"]["job"]})  # sends the next job ahead
    tuner = nni.dispatcher.tuner
    assert prepare["parameters"]["job"] in tuner.pipeline.results and not tuner.pipeline.failure
    (unsent,) = [job for job in tuner.pipeline.jobs if job not in tuner.pipeline.results]

    manager.trials = [{"trialJobId": "T0", "status": "SUCCEEDED", "hyperParameters": [dump(prepare)]}]
    tuner.close()
    resumed = Nni(SafsTuner(**SMALL, workspace=str(tmp_path / "ws"), manager=manager.client))
    resumed.dispatcher.load_checkpoint()
    resumed.request(1)
    (again,) = resumed.new_trials()
    assert again["parameters"]["job"] == unsent and resumed.dispatcher.tuner.resubmitted == 0
    assert not resumed.dispatcher.tuner.pipeline.failure


def test_trial_ends_on_nnis_second_thread_never_run_beside_the_other_callbacks(tmp_path, manager):
    """NNI 3.0 handles TrialEnd on its assessor thread. Thousands of trial ends (some of trials
    that died, most of trials long finished) arrive from a second thread while requests and
    results arrive on the first: no two callbacks overlap, no job is handed out twice, no result
    is lost, the trial count is exact, and the saved state reloads to the same pipeline."""
    rng = random.Random(3)
    nni = Nni(SafsTuner(**SMALL, workspace=str(tmp_path / "ws"), manager=manager.client))
    tuner = nni.dispatcher.tuner
    inside, overlaps = [0], []

    def exclusive(function):  # what two callbacks at once would both be inside; widened by a sleep
        def wrapper(*args, **kwargs):
            inside[0] += 1
            overlaps.extend([function.__name__] if inside[0] > 1 else [])
            time.sleep(0.0002)
            try:
                return function(*args, **kwargs)
            finally:
                inside[0] -= 1
        return wrapper
    tuner.pipeline.ask, tuner.pipeline.tell = exclusive(tuner.pipeline.ask), exclusive(tuner.pipeline.tell)
    tuner._save = exclusive(tuner._save)

    ends: queue.Queue = queue.Queue()
    fired = [0]

    def assessor_thread():
        while (event := ends.get()) is not None:
            nni.trial_end(*event)
            fired[0] += 1
    thread = threading.Thread(target=assessor_thread)
    thread.start()
    issued, finished, died = [], [], 0
    waiting, running = nni.new_trials(), []
    nni.request(2)
    deadline = time.time() + 120
    try:
        while not tuner.pipeline.finished and time.time() < deadline:
            new = nni.new_trials()
            issued += new
            waiting += new
            while waiting and len(running) < 2:
                running.append(waiting.pop(0))
            if not running:
                time.sleep(0.001)  # a dead trial's end, on the other thread, unlocks the next job
                continue
            record = running.pop(rng.randrange(len(running)))
            if record["parameters"]["stage"] == "search" and rng.random() < 0.2:
                died += 1  # no result: its end, on the other thread, scores it lost
                ends.put((record["parameter_id"], f"T{record['parameter_id']}", "FAILED"))
            else:
                nni.final(record, result_for(record["parameters"]))
                finished.append(record)
                for _ in range(150):  # the ends of trials long finished, which change nothing
                    old = rng.choice(finished)
                    ends.put((old["parameter_id"], f"T{old['parameter_id']}", "FAILED"))
            nni.request(1)
    finally:
        ends.put(None)
        thread.join(timeout=120)
    issued += nni.new_trials()
    tuner.flush()
    assert tuner.pipeline.finished and not tuner.pipeline.failure, "the pipeline did not finish in time"
    assert not overlaps, f"callbacks overlapped in {sorted(set(overlaps))}"
    assert fired[0] >= 2000 and died >= 1
    jobs = [r["parameters"]["job"] for r in issued]
    assert len(jobs) == len(set(jobs)) == len(tuner.pipeline.jobs), "a job handed out twice, or one never"
    assert len({r["parameter_id"] for r in issued}) == len(issued)
    assert set(tuner.pipeline.results) == set(tuner.pipeline.jobs)  # no result lost
    lost = [r for r in tuner.pipeline.results.values() if r.status == Status.LOST]
    assert len(lost) == died
    assert manager.profile["params"]["maxTrialNumber"] == len(issued)
    tuner.close()
    reloaded = SafsTuner(**SMALL, workspace=str(tmp_path / "ws"), manager=manager.client)
    reloaded.load_checkpoint()
    assert {k: r.to_dict() for k, r in reloaded.pipeline.results.items()} == \
        {k: r.to_dict() for k, r in tuner.pipeline.results.items()}
    assert reloaded.parameter_jobs == tuner.parameter_jobs


def _raise(*args, **kwargs):
    raise RuntimeError("injected")


@pytest.mark.parametrize("callback", ["generate_multiple_parameters", "receive_trial_result", "trial_end",
                                      "import_data"])
def test_an_exception_in_a_callback_stops_the_pipeline_with_its_reason(tmp_path, manager, callback):
    """Fail-stop: the dispatcher lives on, the reason reaches summary.json and results.md, and NNI
    is told to end at the trials it has (no hang until maxExperimentDuration)."""
    nni = Nni(SafsTuner(**SMALL, workspace=str(tmp_path / "ws"), manager=manager.client))
    tuner = nni.dispatcher.tuner
    nni.request(1)
    (prepare,) = nni.new_trials()
    nni.final(prepare, {"default": 20.0, "job": prepare["parameters"]["job"]})
    (running,) = nni.new_trials()  # sent ahead on prepare's result
    manager.trials = [{"trialJobId": "T0", "status": "SUCCEEDED"}, {"trialJobId": "T1", "status": "RUNNING"}]
    if callback == "generate_multiple_parameters":
        tuner.pipeline.ask = _raise
        nni.request(1)
    elif callback == "receive_trial_result":
        tuner.pipeline.tell = _raise
        nni.final(running, result_for(running["parameters"]))
    elif callback == "trial_end":
        tuner.manager.trial_statuses = _raise
        nni.trial_end(running["parameter_id"], "T1", "FAILED")
    else:
        tuner.pipeline.tell = _raise
        nni.dispatcher.process_command(CommandType.ImportData, [
            {"parameter": running["parameters"], "value": dump(result_for(running["parameters"]))}])
    reason = f"SafsTuner.{callback} raised RuntimeError: injected"
    assert tuner.pipeline.failure == reason
    assert json.loads((tmp_path / "ws" / "summary.json").read_text())["failure"] == reason
    assert f"The run stopped: {reason}" in (tmp_path / "ws" / "results.md").read_text()
    tuner.flush()  # the trial count goes out on the sender thread
    assert manager.profile["params"]["maxTrialNumber"] == 2  # what NNI recorded: it ends when they end
    nni.request(1)
    assert nni.new_trials() == []  # nothing more is handed out
