"""Real NNI experiments (nnictl create / stop / resume; local, and remote over a loopback sshd),
checked through NNI's REST API."""
import getpass
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import TINY, free_port

pytestmark = pytest.mark.nni

REPO = Path(__file__).resolve().parents[1]
UPPER_BOUND = 2 + (4 + 1) + 2 * 2 + 3
# stage 2's promotion on rungs of 1 and 2 epochs, 3 sets per study; at most 1 + 4 + (4 + 1) + 2 x 3 x 2
# trials (prepare, baseline and finals, stage 1, both studies with every set at every rung)
# stage 1's ASHA on rungs of 1 and 2 epochs, 4 genomes
STAGE1_ASHA = dict(max_trials=24, search_algorithm="asha", search_steps=4, search_epochs=2, search_min_epochs=1,
                   search_reduction_factor=2)
PROMOTION = dict(max_trials=22, hpo_promotion="asha", hpo_trials=3, hpo_epochs=2, hpo_min_epochs=1,
                 hpo_reduction_factor=2)


class Experiment:
    """One nnictl experiment in a private HOME (nnictl keeps its registry under ~)."""

    def __init__(self, tmp_path: Path, registered: bool = False, home: Path | None = None,
                 max_trials: int = UPPER_BOUND, **overrides):
        tmp_path = home or tmp_path
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.port = free_port()
        self.workspace = tmp_path / "ws"
        self.config = tmp_path / "experiment.yml"
        class_args = {**TINY, **overrides, "workspace": str(self.workspace)}
        if registered:  # by the builtin name our meta file registers
            out = self.nnictl("algo", "register", "--meta", str(REPO / "experiment_configs" / "safs_algo_meta.yml"))
            assert out.returncode == 0, out.stdout + out.stderr
            tuner = {"name": "SAFS", "classArgs": class_args}
        else:
            tuner = {"codeDirectory": str(REPO), "className": "nni_safs.tuner.SafsTuner", "classArgs": class_args}
        self.config.write_text(yaml.safe_dump({
            "experimentName": "safs-test", "searchSpace": {},
            "trialCommand": f"{sys.executable} -m nni_safs.trial", "trialCodeDirectory": str(REPO),
            "trialConcurrency": 2, "maxTrialNumber": max_trials, "maxExperimentDuration": "20m",
            "tuner": tuner, "trainingService": {"platform": "local"}}))
        self.id = None

    def nnictl(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``nnictl ARGS`` as a user types it in the venv (``env``: instead of this process's)."""
        env = dict(os.environ if env is None else env, HOME=str(self.home),
                   NNI_CONFIG_DIR=str(self.home / "nni-config"),
                   PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
        return subprocess.run([str(Path(sys.executable).parent / "nnictl"), *args], env=env,
                              capture_output=True, text=True, timeout=120)

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/nni{path}", timeout=10) as r:
            return json.loads(r.read().decode())

    def create(self):
        out = self.nnictl("create", "--config", str(self.config), "--port", str(self.port))
        assert out.returncode == 0, out.stdout + out.stderr
        self.id = self.get("/experiment")["id"]

    def wait(self, until, timeout=600.0, poll=2.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.get("/check-status")
            assert status["status"] != "ERROR", status
            if until(status["status"]):
                return status["status"]
            time.sleep(poll)
        raise AssertionError(f"timed out; status {self.get('/check-status')}, dispatcher log:\n{self.dispatcher_log()}")

    def wait_for_results(self, count: int, timeout: float = 300.0) -> None:
        self.wait_for_metrics(lambda metrics: len(metrics) >= count, timeout)

    def wait_for_metrics(self, until, timeout: float = 300.0) -> None:
        """Until ``until(final_metrics())`` holds."""
        deadline = time.monotonic() + timeout
        while not until(self.final_metrics()):
            assert time.monotonic() < deadline, self.dispatcher_log()
            time.sleep(1)

    def final_metrics(self) -> list[dict]:
        """(parameterId, trialJobId, the trial's own final dict) of every final result."""
        rows = []
        for m in self.get("/metric-data"):
            if m["type"] == "FINAL":
                value = json.loads(json.loads(m["data"]))
                rows.append({"parameterId": int(m["parameterId"]), "trialJobId": m["trialJobId"], **value})
        return rows

    def dispatcher_log(self) -> str:
        logs = list(self.home.glob("nni-experiments/*/log/dispatcher.log"))
        return logs[0].read_text()[-20000:] if logs else "(no dispatcher log)"

    def stop(self):
        self.nnictl("stop", "--all")


@pytest.fixture
def experiment(tmp_path):
    created = []

    def make(**overrides):
        exp = Experiment(tmp_path, **overrides)
        created.append(exp)
        return exp

    yield make
    for exp in created:
        exp.stop()


def test_experiment_runs_every_stage_and_ends_done(experiment):
    exp = experiment(registered=True)  # `tuner: {name: SAFS}`; the resume test uses className
    exp.create()
    polls, deadline = [], time.monotonic() + 600  # (NNI's status, trials running or waiting), as the portal shows
    while (status := exp.get("/check-status")["status"]) not in ("DONE", "ERROR") and time.monotonic() < deadline:
        polls.append((status, sum(t["status"] in ("RUNNING", "WAITING") for t in exp.get("/trial-jobs"))))
        time.sleep(0.2)
    assert status == "DONE", exp.dispatcher_log()
    trials = exp.get("/trial-jobs")
    # an honest status: never TUNER_NO_MORE_TRIAL while the pipeline has trials running or jobs
    # left, stage barriers included (the previous tuners: after every trial, then at each barrier),
    # so the manager never warns that a job came after it
    spans = [status for status, _ in itertools.groupby(status for status, _ in polls)]
    warnings = next(exp.home.glob("nni-experiments/*/log/nnimanager.log")).read_text().count(
        "It is not supposed to receive more trials")
    assert "TUNER_NO_MORE_TRIAL" not in spans and warnings == 0, (spans, warnings)
    assert "RUNNING" in spans, spans
    assert trials and all(t["status"] == "SUCCEEDED" for t in trials), [t["status"] for t in trials]
    # the tuner lowered maxTrialNumber to its exact trial count
    assert exp.get("/experiment")["params"]["maxTrialNumber"] == len(trials)

    metrics = exp.final_metrics()
    assert len(metrics) == len(trials)
    # NNI 3.0 may hand parameters to trials out of order: each trial names what it really ran,
    # and that must agree with the parameter id NNI recorded for its metric
    assert all(m["parameterId"] == m["parameter_id"] for m in metrics)
    jobs = {m["job"]: m for m in metrics}
    assert sorted(jobs) == list(range(len(trials)))  # no job lost, none run twice
    stages = [m["stage"] for m in metrics]
    assert stages.count("prepare") == 1 and stages.count("baseline") == 1
    assert stages.count("hpo") == 2 * TINY["hpo_trials"]
    assert sorted(m["variant"] for m in metrics if m["stage"] == "final") == ["safs", "stage1", "stage2"]
    assert TINY["search_steps"] + 1 <= stages.count("search") <= TINY["max_search_steps"] + 1
    for m in metrics:
        if m["stage"] != "prepare":
            assert abs(m["density"] - 0.01) < 0.0005
    # one intermediate result per epoch, in order, under the trial's own parameter id
    periodical = [m for m in exp.get("/metric-data") if m["type"] == "PERIODICAL"]
    for m in metrics:
        mine = [p for p in periodical if p["trialJobId"] == m["trialJobId"]]
        assert sorted(int(p["sequence"]) for p in mine) == list(range(m.get("epochs", len(mine))))
        assert {int(p["parameterId"]) for p in mine} == {m["parameter_id"]}

    summary = json.loads((exp.workspace / "summary.json").read_text())
    assert summary["finished"] and not summary["failure"]
    assert summary["trials_per_stage"] == {s: stages.count(s) for s in ("prepare", "baseline", "search", "hpo", "final")}
    final = {m["variant"]: m for m in metrics if m["stage"] == "final"}
    for column in ("stage1", "stage2", "safs"):
        assert summary["columns"][column]["test_acc"] == final[column]["test_acc"]
    assert summary["columns"]["baseline"]["test_acc"] == next(m for m in metrics if m["stage"] == "baseline")["test_acc"]
    assert summary["columns"]["dense"]["test_acc"] > 50.0  # a real model trained on real digits
    assert summary["columns"]["safs"]["genome"] == final["safs"]["genome"]
    assert "| lenet5 (mnist5k) |" in (exp.workspace / "results.md").read_text()
    tensorboard = list(exp.home.glob("nni-experiments/*/environments/*/trials/*/tensorboard/events.out.tfevents.*"))
    assert tensorboard, "trials write TensorBoard scalars into NNI's output directory"
    logs = list(exp.home.glob(f"nni-experiments/{exp.id}/environments/*/trials/*/trial.log"))
    assert len(logs) == len(trials) and all("PRINT final: {" in log.read_text() for log in logs)  # "View trial log"
    # trials after the first start warm (nni_safs.integration.forkserver); the first ones may be cold while it starts
    warm = [log for log in logs if "nni_safs: warm start" in (log.parent / "trial.stdout").read_text()]
    assert len(warm) >= len(trials) // 2, f"{len(warm)} of {len(trials)} trials started warm"
    # each trial says where it ran, and the summary and table say it per stage
    assert all(m["device"] == "cpu" and isinstance(m["warm"], bool) for m in metrics)
    assert sum(m["warm"] for m in metrics) == len(warm)
    where = summary["where"]
    assert {s: w["devices"] for s, w in where.items()} == {s: {"cpu": stages.count(s)} for s in set(stages)}
    assert {s: w["warm"] for s, w in where.items()} == {s: sum(m["warm"] for m in metrics if m["stage"] == s)
                                                         for s in set(stages)}
    assert sum(w["warm"] + w["cold"] for w in where.values()) == len(trials)
    assert "| search | cpu (" in (exp.workspace / "results.md").read_text()


def test_a_second_experiment_on_a_workspace_holding_a_run_is_refused_and_changes_nothing(experiment, tmp_path):
    """A workspace is one run's record: a new experiment on it (``nnictl create`` again, which
    numbers its jobs from 0) must not report the first run's results as its own jobs'."""
    first = experiment()
    first.create()
    assert first.wait(lambda s: s == "DONE") == "DONE"
    summary = (first.workspace / "summary.json").read_text()
    (tmp_path / "second").mkdir()
    second = experiment(home=tmp_path / "second")
    config = yaml.safe_load(second.config.read_text())
    config["tuner"]["classArgs"]["workspace"] = str(first.workspace)
    second.config.write_text(yaml.safe_dump(config))
    second.create()
    deadline = time.monotonic() + 120
    while second.get("/check-status")["status"] != "ERROR":
        assert time.monotonic() < deadline, second.dispatcher_log()
        time.sleep(1)
    assert second.get("/trial-jobs") == []  # nothing ran, nothing was reported
    log = second.dispatcher_log()
    assert f"is the record of experiment {first.id}" in log and "safs results" in log, log
    assert (first.workspace / "summary.json").read_text() == summary


def test_stop_and_resume_continues_without_repeating_work(experiment):
    exp = experiment(search_epochs=2, search_data_fraction=1.0)
    exp.create()
    exp.wait_for_results(4)
    done_before = {m["job"]: m["trialJobId"] for m in exp.final_metrics()}
    out = exp.nnictl("stop", exp.id)
    assert out.returncode == 0, out.stderr
    out = exp.nnictl("resume", exp.id, "--port", str(exp.port))
    assert out.returncode == 0, out.stdout + out.stderr
    assert exp.wait(lambda s: s == "DONE") == "DONE"
    metrics = exp.final_metrics()
    by_job = {}
    for m in metrics:
        by_job.setdefault(m["job"], []).append(m["trialJobId"])
    for job, runs in by_job.items():
        # NNI re-runs trials still RUNNING at the stop, even ones that had reported: those
        # re-report the stored result (identical, down to its timing; as their own parameter id's)
        # instead of training again
        reports = [{k: v for k, v in m.items() if k not in ("parameterId", "trialJobId", "parameter_id")}
                   for m in metrics if m["job"] == job]
        assert all(r == reports[0] for r in reports[1:]), reports
    for job, trial in done_before.items():
        assert by_job[job][0] == trial  # results from before the stop were kept, not redone
    summary = json.loads((exp.workspace / "summary.json").read_text())
    assert summary["finished"] and not summary["failure"]
    assert sorted(by_job) == list(range(len(by_job)))
    assert "resumed SAFS pipeline" in exp.dispatcher_log()


def stop_and_resume_ladder(exp: Experiment, ready) -> dict:
    """Run ``exp``, stop it once ``ready(final metrics)`` holds (mid-ladder), ``nnictl resume`` it
    and wait until DONE; check that every result from before the stop was kept, not redone, and
    return its summary.json."""
    exp.create()
    exp.wait_for_metrics(ready)
    done_before = {m["job"]: m["trialJobId"] for m in exp.final_metrics()}
    assert exp.nnictl("stop", exp.id).returncode == 0
    out = exp.nnictl("resume", exp.id, "--port", str(exp.port))
    assert out.returncode == 0, out.stdout + out.stderr
    assert exp.wait(lambda s: s == "DONE") == "DONE"
    first = {}
    for m in exp.final_metrics():
        first.setdefault(m["job"], m["trialJobId"])
    assert all(first[job] == trial for job, trial in done_before.items())  # kept, not redone
    assert "resumed SAFS pipeline" in exp.dispatcher_log()
    summary = json.loads((exp.workspace / "summary.json").read_text())
    assert summary["finished"] and not summary["failure"]
    return summary


def test_asha_climbs_its_ladder_at_concurrency_2_and_resumes_without_repeating_work(experiment):
    """The multi-fidelity stage 1 through nnictl: each trial's parameters name its rung and epochs,
    the own activation runs at the top rung, a stop and resume mid-ladder keeps every finished
    evaluation, and the top rung's best is the stage-1 column's genome."""
    exp = experiment(**STAGE1_ASHA)
    summary = stop_and_resume_ladder(exp, lambda metrics: len(metrics) >= 5)
    search = [job for job in summary["jobs"] if job["stage"] == "search"]
    assert {(job["variant"], job["epochs"]) for job in search} == {("asha-rung0", 1), ("asha-rung1", 2)}
    assert len({(job["variant"], job["genome"]) for job in search}) == len(search)  # no evaluation repeated
    own = [job for job in search if set(job["genome"].replace(";", "=").split("=")[1::2]) == {"relu"}]
    assert [job["variant"] for job in own] == ["asha-rung1"]
    top = {job["genome"]: job["result"]["default"] for job in search if job["variant"] == "asha-rung1"}
    stage1 = next(job for job in summary["jobs"] if job["stage"] == "final" and job["variant"] == "stage1")
    assert stage1["genome"] == summary["stages"]["search"]["winner"] == max(top, key=top.get)


def test_hpo_promotion_climbs_both_studies_ladders_at_concurrency_2_and_resumes_without_repeating_work(experiment):
    """Stage 2's promotion through nnictl: each stage-2 trial names its study's rung and runs its
    epochs, a stop and resume mid-ladder keeps every finished evaluation and repeats no (set, rung),
    and the stage2 and SAFS columns fine-tune their study's best at the top rung."""
    exp = experiment(**PROMOTION)
    summary = stop_and_resume_ladder(exp, lambda metrics: any(m["variant"].endswith("-rung1") for m in metrics))
    hpo = [job for job in summary["jobs"] if job["stage"] == "hpo"]
    assert {(job["variant"], job["epochs"]) for job in hpo} == {
        (f"{study}-rung{rung}", rung + 1) for study in ("default", "safs") for rung in (0, 1)}
    assert len({(job["variant"], json.dumps(job["hparams"], sort_keys=True)) for job in hpo}) == len(hpo)
    assert {job["seed"] for job in hpo} == {1}  # seed + final_seeds: the first confirmation seed
    final = {job["variant"]: job for job in summary["jobs"] if job["stage"] == "final"}
    for study, column in (("default", "stage2"), ("safs", "safs")):
        assert sum(job["variant"] == f"{study}-rung0" for job in hpo) == 3
        top = {json.dumps(job["hparams"], sort_keys=True): job["result"]["default"]
               for job in hpo if job["variant"] == f"{study}-rung1"}
        assert json.dumps(final[column]["hparams"], sort_keys=True) == max(top, key=top.get)
    assert exp.get("/experiment")["params"]["maxTrialNumber"] == len(exp.get("/trial-jobs"))


@pytest.mark.parametrize("settings", [{"search_epochs": 2}, {**STAGE1_ASHA, **PROMOTION, "max_trials": 30}],
                         ids=["lahc", "ladders"])
def test_killed_manager_then_resume_keeps_every_finished_evaluation(experiment, settings):
    exp = experiment(search_data_fraction=1.0, **settings)
    exp.create()
    exp.wait_for_results(4)
    done_before = {m["job"]: m["default"] for m in exp.final_metrics()}
    registry = json.loads((exp.home / "nni-experiments" / ".experiment").read_text())
    os.kill(registry[exp.id]["pid"], signal.SIGKILL)  # the NNI manager dies mid-search
    time.sleep(3)
    out = exp.nnictl("resume", exp.id, "--port", str(exp.port))
    assert out.returncode == 0, out.stdout + out.stderr
    assert exp.wait(lambda s: s == "DONE") == "DONE"
    summary = json.loads((exp.workspace / "summary.json").read_text())
    assert summary["finished"] and not summary["failure"]
    results = {job["job"]: job["result"] for job in summary["jobs"]}
    assert all(results[job] is not None for job in results)
    for job, score in done_before.items():
        assert results[job]["default"] == score  # kept, not re-evaluated
    assert sorted(results) == list(range(len(results)))


@pytest.mark.parametrize("stage1", [{"search_epochs": 3}, {**STAGE1_ASHA, "search_epochs": 4, "search_min_epochs": 2}],
                         ids=["lahc", "asha"])
def test_a_killed_trial_is_a_failed_evaluation_and_the_search_goes_on(experiment, stage1):
    exp = experiment(search_data_fraction=1.0, **stage1)
    exp.create()
    jobs = exp.workspace / "jobs"
    deadline, victim = time.monotonic() + 300, None
    while victim is None:  # a search job (ids from 2 on) that is running right now
        assert time.monotonic() < deadline, exp.dispatcher_log()
        for marker in sorted(jobs.glob("*.json")) if jobs.exists() else []:
            data = json.loads(marker.read_text())
            if data["job"] >= 2 and "result" not in data:
                victim = data["job"]
                os.kill(data["pid"], signal.SIGKILL)
                break
        time.sleep(0.2)
    assert exp.wait(lambda s: s == "DONE") == "DONE"
    statuses = [t["status"] for t in exp.get("/trial-jobs")]
    # NNI 3.0 records a SIGKILLed local trial as USER_CANCELED
    assert sorted(s for s in statuses if s != "SUCCEEDED") in (["FAILED"], ["USER_CANCELED"]), statuses
    summary = json.loads((exp.workspace / "summary.json").read_text())
    results = {job["job"]: job["result"] for job in summary["jobs"]}
    assert results[victim]["status"] == "lost"
    assert results[victim]["reason"] == "the trial ended without reporting a result"
    assert summary["finished"] and not summary["failure"]
    assert all(results[j] and results[j]["status"] == "ok" for j in results if j != victim)


def test_a_failed_prepare_stops_the_experiment_with_its_reason(experiment):
    # a learning rate that makes dense training diverge: prepare raises, nothing else may run
    exp = experiment(train_hparams={"optimizer": "sgd", "lr": 1e30, "momentum": 0.9})
    exp.create()
    assert exp.wait(lambda s: s == "DONE", timeout=300) == "DONE"
    trials = exp.get("/trial-jobs")
    assert [t["status"] for t in trials] == ["FAILED"]
    summary = json.loads((exp.workspace / "summary.json").read_text())
    assert "dense training diverged" in summary["failure"]
    assert "SAFS stops: the prepare trial failed" in exp.dispatcher_log()
    trial_logs = list(exp.home.glob("nni-experiments/*/environments/*/trials/*/trial.log"))
    assert any("dense training diverged" in log.read_text() for log in trial_logs)


def _other_local_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (the manager must refuse it)."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True)
    addresses = [a for a in out.stdout.split() if "." in a and not a.startswith("127.")]
    return addresses[0] if addresses else None


def _answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=3):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("expose", [False, True])
def test_the_manager_listens_on_loopback_unless_exposed(experiment, monkeypatch, capsys, expose):
    from nni_safs.cli import start_experiment
    other = _other_local_address()
    if other is None:
        pytest.skip("this machine has no non-loopback IPv4 address to test against (hostname -I)")
    exp = experiment()
    monkeypatch.setenv("HOME", str(exp.home))
    monkeypatch.setenv("NNI_CONFIG_DIR", str(exp.home / "nni-config"))
    exp.id = start_experiment(exp.config, exp.port, None if expose else "127.0.0.1")
    assert "http://" not in capsys.readouterr().out  # not nnictl's list of every interface's URL
    exp.wait_for_results(1)  # the dispatcher and the trials reach the manager either way
    assert _answers("127.0.0.1", exp.port)
    assert _answers(other, exp.port) is expose


@pytest.mark.parametrize("expose", [False, True])
def test_plain_nnictl_create_listens_on_loopback_unless_opted_out(experiment, expose):
    """``nnictl create`` typed in the venv, from an environment with none of our variables: the
    install's ``nni_safs_loopback.pth`` makes the manager listen on 127.0.0.1; ``NNI_SAFS_EXPOSE=1``
    keeps NNI's every-interface manager."""
    import psutil
    exp = experiment()
    env = {k: v for k, v in os.environ.items() if k not in ("NODE_OPTIONS", "NNI_SAFS_LISTEN_HOST", "NNI_SAFS_EXPOSE")}
    if expose:
        env["NNI_SAFS_EXPOSE"] = "1"
    out = exp.nnictl("create", "--config", str(exp.config), "--port", str(exp.port), env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    exp.id = exp.get("/experiment")["id"]
    listening = {c.laddr.ip for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == exp.port}
    assert listening == ({"::"} if expose else {"127.0.0.1"}), listening
    exp.wait_for_results(1)  # the dispatcher and the trials reach the manager either way


@pytest.mark.parametrize("promotion", [{}, PROMOTION], ids=["one budget", "promoted"])
def test_a_stage2_study_whose_every_trial_raises_ends_done_with_the_reason(experiment, tmp_path, promotion):
    # every stage-2 trial raises (a learning rate build_optimizer refuses); prepare, the baseline
    # and stage 1 run normally; promoted: nothing climbs the ladder (a failed set is never promoted)
    space = tmp_path / "hpo_space.json"
    space.write_text(json.dumps({"optimizer": {"_type": "choice", "_value": [
        {"_name": "adam", "lr": {"_type": "uniform", "_value": [-2.0, -1.0]}}]}}))
    exp = experiment(hpo_space=str(space), **promotion)
    exp.create()
    assert exp.wait(lambda s: s == "DONE", timeout=400) == "DONE"
    summary = json.loads((exp.workspace / "summary.json").read_text())
    assert "every trial of the stage-2 study" in summary["failure"]
    assert "The run stopped: every trial of the stage-2 study" in (exp.workspace / "results.md").read_text()
    assert "SAFS stops: every trial of the stage-2 study" in exp.dispatcher_log()
    trials = exp.get("/trial-jobs")
    hpo = [m for m in exp.final_metrics() if m["stage"] == "hpo"]
    assert hpo and all(m["status"] == "failed" and "lr' must be a positive number" in m["reason"] for m in hpo)
    assert {m["variant"] for m in hpo} <= ({"default-rung0", "safs-rung0"} if promotion else {"default", "safs"})
    assert not [m for m in exp.final_metrics() if m["stage"] == "final"]
    assert exp.get("/experiment")["params"]["maxTrialNumber"] == len(trials)


@pytest.fixture
def loopback_sshd(tmp_path):
    """An OpenSSH server on 127.0.0.1 only, for this test alone: (NNI machineList entry, its HOME).

    Its own port, config, host key and a throwaway key pair; root may log in with that key only
    when the test runs as root. The sessions get their own HOME, so the "remote machine's"
    ``~/nni-experiments`` is not the manager's.
    """
    sshd = shutil.which("sshd", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if sshd is None:
        pytest.skip("needs sshd, Debian package openssh-server (.ci/run installs it when run as root)")
    ssh = tmp_path / "ssh"
    ssh.mkdir()
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / key)], check=True)
    shutil.copy(ssh / "user_key.pub", ssh / "authorized_keys")
    home = tmp_path / "remote_home"
    home.mkdir()
    root = os.geteuid() == 0
    user = "root" if root else getpass.getuser()
    port = free_port()
    (ssh / "sshd_config").write_text(f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {ssh / "host_key"}
AuthorizedKeysFile {ssh / "authorized_keys"}
AllowUsers {user}
PermitRootLogin {"prohibit-password" if root else "no"}
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
Subsystem sftp internal-sftp
# NNI 3.0 runs `pip install nni --upgrade` on every machine it starts a worker on: no index here
SetEnv HOME={home} PIP_NO_INDEX=1
""")  # StrictModes no: the key files live under /tmp, which every user may write to
    if root:  # sshd's privilege separation directory, which its service unit creates at start
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = tmp_path / "sshd.log"
    with log.open("w") as stderr:
        server = subprocess.Popen([sshd, "-D", "-e", "-f", str(ssh / "sshd_config")], stderr=stderr)
    try:
        deadline = time.monotonic() + 20
        while not _answers("127.0.0.1", port):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield {"host": "127.0.0.1", "port": port, "user": user, "sshKeyFile": str(ssh / "user_key"),
               "pythonPath": str(Path(sys.executable).parent)}, home
    finally:  # NNI's trial keeper daemon there ends with the manager's connection
        server.terminate()
        server.wait(timeout=10)


def test_remote_training_service_runs_the_default_over_ssh(loopback_sshd, experiment, monkeypatch):
    """The cluster path: `safs experiment` with NNI's remote training service, the workspace on
    "shared storage" (an absolute path both machines see) and the manager on loopback.

    loopback_sshd comes first: fixtures end in reverse order, so the experiment stops before sshd.
    """
    from nni_safs.cli import main
    machine, remote_home = loopback_sshd
    exp = experiment()
    config = yaml.safe_load((REPO / "experiment_configs" / "lenet5_mnist_safs.yml").read_text())
    class_args = {**config["tuner"]["classArgs"], **TINY, "search_init": "random", "final_seeds": 1,
                  "workspace": str(exp.workspace)}  # within UPPER_BOUND: no uniform start genomes, one seed
    config["tuner"].update(codeDirectory=str(REPO), classArgs=class_args)
    config.update(trialCodeDirectory=str(REPO), maxTrialNumber=UPPER_BOUND, maxExperimentDuration="20m",
                  nniManagerIp="127.0.0.1", trainingService={"platform": "remote", "machineList": [machine]})
    exp.config.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("HOME", str(exp.home))
    monkeypatch.setenv("NNI_CONFIG_DIR", str(exp.home / "nni-config"))
    assert main(["experiment", str(exp.config), "--port", str(exp.port), "--poll", "2", "--timeout", "300"]) == 0, \
        exp.dispatcher_log()
    trials = exp.get("/trial-jobs")
    assert trials and all(t["status"] == "SUCCEEDED" for t in trials), [t["status"] for t in trials]
    summary = json.loads((exp.workspace / "summary.json").read_text())
    assert summary["finished"] and not summary["failure"]
    assert sum(summary["trials_per_stage"].values()) == len(trials)
    # every trial ran on the "remote machine": its output directories are under the ssh session's HOME
    experiment_id = exp.get("/experiment")["id"]
    remote_trials = remote_home.glob(f"nni-experiments/{experiment_id}/environments/*/trials/*")
    assert sorted(t.name for t in remote_trials) == sorted(t["trialJobId"] for t in trials)
