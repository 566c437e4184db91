"""SafsTuner: the NNI tuner that carries the SAFS pipeline through one experiment.

A thin adapter (after NNI's own PBT tuner) between NNI's callbacks and the pure
:class:`~nni_safs.method.pipeline.SafsPipeline`. What it keeps:

* ``parameter_jobs``: NNI parameter_id -> our job id. NNI 3.0 may blank the parameters it
  passes back (a partly served batch) and may attribute a trial to the wrong parameters at
  concurrency > 1, so results are matched by the ``job`` the trial itself reports.
* ``credits``: parameter ids of refused requests. Stage boundaries are barriers: when no job
  can start yet, the request is refused and its id kept; the job is sent later through the
  ``st_callback`` as soon as a result unlocks work, so no slot of ``trialConcurrency`` idles.
* one job waiting at NNI: NNI's manager looks at its trials every 0.5 s and asks for the next
  job when it sees one ended, but starts what the tuner sends only at its next look, so a
  slot would stand idle in between. So when a trial reports its result (it ends moments later) and
  NNI holds no job in waiting, the tuner sends the slot's next job at once: it is waiting when
  the end is seen and starts then. Every request NNI makes is answered with a job when the
  pipeline has one; that job waits at NNI for the next slot to free. At a stage barrier the
  request is answered later (:class:`AnsweredLater`), so NNI's status reads
  ``TUNER_NO_MORE_TRIAL`` only once the pipeline has nothing more to run.
* ``requeued``: jobs whose trial was lost while the tuner was down (cancelled before a resume),
  handed out again before new work; ``resubmitted`` counts the re-runs NNI had already
  counted a trial for, so the maxTrialNumber the tuner sets stays exact.
* the pipeline's own jobs and results (saved with the pipeline state).

The state is saved after every result (to NNI's checkpoint directory, or the workspace when
run without NNI; a snapshot plus an append-only journal, :mod:`nni_safs.storage.journal`) and
restored by ``nnictl resume``; results of trials that finished while the tuner was down
arrive through ``import_data`` and are folded in the same way.

Minimal config (``experiment_configs/lenet5_mnist_safs.yml`` has the full, documented one)::

    tuner:
      codeDirectory: .
      className: nni_safs.tuner.SafsTuner
      classArgs: {model: lenet5, dataset: mnist5k, workspace: /abs/path/workspace}
"""
from __future__ import annotations

import functools
import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from nni.tuner import Tuner
from websockets.exceptions import WebSocketException

from nni_safs.borrowed import new_parameter_id, serialize_sends, unchecked_versions
from nni_safs.integration.manager_api import ManagerClient, ManagerUnreachable
from nni_safs.integration.pipelines import build_pipeline
from nni_safs.method.contract import JobResult, Status
from nni_safs.method.pipeline import Job
from nni_safs.method.state import LogView
from nni_safs.reports.results import write_results
from nni_safs.settings.config import SafsConfig
from nni_safs.storage.journal import LOCK_WAIT_SECONDS, Journal, StateLockedError
from nni_safs.storage.workspace import TUNER_STATE_FILE, experiment_run, job_marker, open_workspace
from nni_safs_loopback import EXPOSE

_logger = logging.getLogger("nni_safs.tuner")
FAILED_STATES = {"FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED"}
IN_FLIGHT_STATES = {"WAITING", "RUNNING", "UNKNOWN"}  # nnictl resume re-submits these itself
# causes that say nothing about the method (I/O, the manager going away, a locked state): a stop
# for one of them is saved as transient, and `nnictl resume` clears it
TRANSIENT_ERRORS = (OSError, WebSocketException, StateLockedError)
TRIAL_POLL_SECONDS = 10.0  # after a resume, how often trial statuses are read to find dead trials


def _callback(method=None, *, prefetch=None):
    """An NNI callback: one at a time, decide-only, and fail-stop.

    NNI 3.0's dispatcher runs ``trial_end`` on a second thread, beside the others: every
    callback holds the tuner's lock while it changes the state. Nothing slow runs under it:
    ``prefetch(self, *args)`` (a REST read the callback needs) runs before the lock is taken,
    and its answer is passed as ``prefetched=``; what goes to NNI (jobs, the trial count) is
    queued for the tuner's one sender thread (:meth:`SafsTuner._send_loop`). An exception
    (the prefetch's included) would kill the dispatcher (the experiment errors) and, caught and
    forgotten, would leave the state half applied and the experiment waiting until
    ``maxExperimentDuration``; instead it stops the pipeline with its reason (``summary.json``,
    ``results.md``, ``dispatcher.log``) and the experiment ends once the trials NNI already
    runs have ended.
    """
    if method is None:
        return functools.partial(_callback, prefetch=prefetch)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        fetched, fetch_error = None, None
        if prefetch is not None:
            try:
                fetched = prefetch(self, *args, **kwargs)
            except Exception as err:  # noqa: BLE001  (raised again under the lock: fail-stop)
                fetch_error = err
        with self._lock:
            try:
                if fetch_error is not None:
                    raise fetch_error
                if prefetch is not None:
                    kwargs["prefetched"] = fetched
                return method(self, *args, **kwargs)
            except Exception as err:
                _logger.exception("SafsTuner.%s raised; SAFS stops", method.__name__)
                self._fail_stop(f"SafsTuner.{method.__name__} raised {type(err).__name__}: {err}",
                                transient=isinstance(err, TRANSIENT_ERRORS))
                return [] if method.__name__ == "generate_multiple_parameters" else None
    return wrapper


class AnsweredLater(list):
    """The jobs a request gets now, counting as an answer to all of it: the rest follow through
    ``st_callback`` once the stage barrier lifts.

    NNI 3.0's dispatcher sends one ``NewTrialJob`` per item it iterates and tells the manager
    "no more trials" (status ``TUNER_NO_MORE_TRIAL``, a warning per later job) when ``len()``
    is short of the ids asked for; a barrier is not the end, so it must not say so.
    """

    def __init__(self, served: list[dict], asked: int) -> None:
        super().__init__(served)
        self.asked = asked

    def __len__(self) -> int:
        return self.asked


class SafsTuner(Tuner):
    """The SAFS pipeline as an NNI tuner; ``classArgs`` are the keys of :class:`SafsConfig`."""

    def __init__(self, *, manager: ManagerClient | None = None, **class_args: Any) -> None:
        """``manager``: the NNI manager's REST API (default: the one that started this dispatcher)."""
        self._lock = threading.RLock()  # held by every callback (see _callback)
        self._stopping = False
        self.manager = manager or ManagerClient.from_environment()
        self.manager.check_loopback(exposure_asked=os.environ.get(EXPOSE) == "1")
        config = SafsConfig.from_dict(class_args)
        experiment = self.manager.experiment_id()
        self.run = experiment_run(experiment) if experiment else "SafsTuner outside NNI"
        self.config = open_workspace(config, self.manager.base_directory(), run=self.run)
        self.settings = self.config.to_dict()  # what every job's key digests
        self.pipeline = build_pipeline(self.config)
        self.parameter_jobs: dict[int, int] = {}
        self.credits: list[int] = []
        self.st_callback = None
        self.reported_total: int | None = None  # the trial count last sent (the pipeline's)
        self._reported_ending = False  # ... and whether it was sent as the end's (NNI's own count)
        self._failure_logged = False
        self._state: Journal | None = None
        self.requeued: list[int] = []  # issued jobs to hand out again
        self.resubmitted = 0  # trials beyond one per job (each counts against maxTrialNumber)
        self.extra_trial_jobs: set[int] = set()  # requeued jobs whose re-run is such a trial
        self.transient_failure = False  # the stop's cause was transient: a resume clears it
        self._manager_gone = False  # a send found the manager closed: nothing more is sent
        self._sends: queue.Queue = queue.Queue()  # what the sender thread sends to NNI, in order
        threading.Thread(target=self._send_loop, name="safs-sender", daemon=True).start()
        for version in unchecked_versions():
            _logger.warning("nni-safs relies on private names of NNI and torch (nni_safs/borrowed.py): %s", version)
        low, high = self.pipeline.evaluation_bounds()
        _logger.info("SAFS run %s, workspace %s (its run.json names this run)", self.run, self.config.workspace)
        _logger.info("SAFS pipeline: %s..%s evaluations, one trial each but for a genome stage 1 proposes "
                     "again (its earlier score is reused); workspace %s", low, high, self.config.workspace)
        self.manager.check_max_trial_number(low, high)
        self.manager.exit_with_manager()

    # -- NNI callbacks ---------------------------------------------------------------------
    def update_search_space(self, search_space: dict) -> None:
        """The spaces come from classArgs and ``search_spaces/``; NNI's searchSpace is unused."""

    @_callback
    def generate_multiple_parameters(self, parameter_id_list: list[int], **kwargs: Any) -> list[dict]:
        if kwargs.get("st_callback") is not None and self.st_callback is None:
            self.st_callback = kwargs["st_callback"]
            serialize_sends(self.st_callback)  # our sender thread beside NNI's own sends
        served = []  # NNI pairs served[i] with parameter_id_list[i]: serve a prefix
        for index, parameter_id in enumerate(parameter_id_list):
            job = self._next_job()
            if job is None:  # a barrier: keep the refused ids, pay them through st_callback
                self.credits.extend(parameter_id_list[index:])
                if self.st_callback is not None and not (self.pipeline.finished or self.pipeline.failure):
                    served = AnsweredLater(served, len(parameter_id_list))
                break
            self.parameter_jobs[parameter_id] = job.id
            served.append(job.params)
        self._after_change()
        return served

    @_callback(prefetch=lambda self, *args, **kwargs: self.manager.trial_concurrency())
    def receive_trial_result(self, parameter_id: int, parameters: Any, value: Any, **kwargs: Any) -> None:
        self._fold(parameter_id, value, concurrency=kwargs["prefetched"])

    @_callback(prefetch=lambda self, parameter_id, success, **kwargs: None if success
               else self.manager.trial_statuses())
    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        """A trial that died without reporting (killed, crashed) is a failed evaluation.

        NNI 3.0 may pass another trial's ``parameter_id`` here at concurrency > 1, so the job
        is found through the marker each trial writes when it starts (its NNI trial id) and
        the manager's trial statuses; ``parameter_id`` is only trusted for a job whose trial
        never started.
        """
        if success:
            return
        if self._score_dead(kwargs["prefetched"], parameter_id):
            self._after_change()

    def _score_dead(self, statuses: dict[str, str] | None, parameter_id: int | None = None) -> bool:
        """Score LOST every issued job whose trial (named by its marker) NNI says has failed, and
        the job of ``parameter_id`` if its trial never started; whether any was."""
        dead = []
        for job_id in [j for j in self.pipeline.jobs if j not in self.pipeline.results]:
            marker = self._marker(job_id)
            if marker.is_file():
                trial = json.loads(marker.read_text()).get("trial_job_id")
                if statuses is not None and statuses.get(trial) in FAILED_STATES:
                    dead.append(job_id)
            elif parameter_id is not None and job_id == self.parameter_jobs.get(parameter_id):
                dead.append(job_id)
        for job_id in dead:
            _logger.warning("job %s ended without a result; scoring it as a failed evaluation", job_id)
            self.pipeline.tell(job_id, JobResult.failed(self.pipeline.jobs[job_id].spec,
                                                        "the trial ended without reporting a result", Status.LOST))
        return bool(dead)

    def watch_trials(self, poll_seconds: float | None = None) -> None:
        """Find dead trials by their status, not only by their end (a thread, started at resume).

        After ``nnictl resume`` NNI 3.0 sends no ``trial_end`` for trials created before it: a
        re-run that dies without reporting would hold its stage's barrier up until
        ``maxExperimentDuration``. The statuses are read outside the tuner's lock.
        """
        def watch() -> None:
            while self._state is not None:
                time.sleep(poll_seconds or TRIAL_POLL_SECONDS)
                try:
                    statuses = self.manager.trial_statuses()
                except ManagerUnreachable:
                    continue  # the manager is going down: exit_with_manager ends this process
                self._poll_dead_trials(statuses)

        threading.Thread(target=watch, name="safs-trial-watch", daemon=True).start()

    @_callback
    def _poll_dead_trials(self, statuses: dict[str, str] | None) -> None:
        if self._score_dead(statuses):
            self._after_change()

    @_callback
    def import_data(self, data: list[dict]) -> None:
        """Results that arrived while the tuner was down (``nnictl resume``)."""
        for entry in data:
            params, value = entry.get("parameter") or {}, entry.get("value")
            if isinstance(params, dict) and "job" in params and isinstance(value, dict):
                job_id = int(params["job"])
                if job_id in self.pipeline.jobs and job_id not in self.pipeline.results:
                    self._tell_checked(job_id, value)
        self._after_change()

    # -- persistence ---------------------------------------------------------------------------
    def _state_path(self) -> Path:
        directory = self.get_checkpoint_path() or self.config.workspace
        return Path(directory) / TUNER_STATE_FILE

    def _journal(self) -> Journal:
        """The state, locked for this tuner from the moment it is opened (before any read: at a
        resume's load, else at the first save; not in ``__init__``, which NNI gives 10 s before the
        dispatcher must connect, while the replaced dispatcher may hold the lock a little longer)."""
        path = self._state_path()
        if self._state is None or self._state.path != path:
            if self._state is not None:
                self._state.close()
            # a dispatcher of this experiment that `nnictl resume` replaced exits within seconds
            self._state = Journal(path, wait=LOCK_WAIT_SECONDS)
        return self._state

    def close(self) -> None:
        """Send what is decided, then stop writing the state (held from the first save until the
        process ends), so another tuner may: ``nnictl resume`` starts a new dispatcher while the
        old one may live on briefly."""
        self.flush()
        if self._state is not None:
            self._state.close()
            self._state = None

    @_callback
    def save_checkpoint(self) -> None:
        """NNI's request; the tuner saves after every change anyway."""
        self._save()

    def _save(self) -> None:
        """After every change: costs what changed, not the whole state (:mod:`nni_safs.storage.journal`)."""
        head = {"pipeline": self.pipeline.state_head(), "config": self.config.to_dict(), "requeued": self.requeued,
                "resubmitted": self.resubmitted, "extra_trial_jobs": sorted(self.extra_trial_jobs),
                "transient_failure": self.transient_failure}
        logs = {"parameter_jobs": LogView(self.parameter_jobs.items(), list),
                **self.pipeline.state_logs("pipeline.")}
        self._journal().save(head, logs)

    def load_checkpoint(self) -> None:
        """``nnictl resume``: the saved state (refused if saved with other classArgs; an error here
        must not be fail-stop, which would save this tuner's state over it)."""
        recorded = self.manager.trial_jobs()  # REST, before the lock
        with self._lock:
            self._load(recorded)

    def _load(self, recorded: dict[int, set[str]] | None) -> None:
        state = self._journal().load()
        if state is None:
            _logger.warning("no SAFS state at %s: starting the pipeline from the beginning", self._state_path())
            return
        if state["config"] != self.config.to_dict():
            raise ValueError(f"{self._state_path()} was saved with other classArgs; resume with the original config")
        self.pipeline = self.pipeline.restored(state["pipeline"])
        if state.get("transient_failure") and self.pipeline.failure:
            _logger.warning("the last stop was transient (%s): resumed, the pipeline goes on", self.pipeline.failure)
            self.pipeline.failure = ""
        self.parameter_jobs = {int(k): v for k, v in state["parameter_jobs"]}
        self.requeued, self.resubmitted = list(state["requeued"]), state["resubmitted"]
        self.extra_trial_jobs = set(state["extra_trial_jobs"])
        for job_id in [j for j in self.pipeline.jobs if j not in self.pipeline.results]:
            marker = self._marker(job_id)
            finished = json.loads(marker.read_text()).get("result") if marker.is_file() else None
            if finished is not None:  # reported while the tuner was going down
                self._tell_checked(job_id, finished)
            elif recorded is not None and not recorded.get(job_id, set()) & IN_FLIGHT_STATES:
                # NNI will not re-run it; a trial it already recorded makes the re-run an extra trial
                self.requeue(job_id, extra_trial=job_id in recorded)
        _logger.info("resumed SAFS pipeline: %d jobs issued, %d results", len(self.pipeline.jobs),
                     len(self.pipeline.results))
        self.watch_trials()

    # -- internals ------------------------------------------------------------------------
    def _fold(self, parameter_id: int, value: Any, concurrency: int | None = None) -> None:
        job_id = value.get("job") if isinstance(value, dict) else None
        if job_id is None:
            job_id = self.parameter_jobs.get(parameter_id)
        if job_id is None or int(job_id) not in self.pipeline.jobs:
            _logger.warning("result of unknown job (parameter %s): %r", parameter_id, value)
            return
        self._tell_checked(int(job_id), value)
        self._after_change(slot_freeing=True, concurrency=concurrency)

    def _marker(self, job_id: int) -> Path:
        return job_marker(self.config.workspace, self.pipeline.jobs[job_id].spec.key(self.settings))

    def _tell_checked(self, job_id: int, value: Any) -> None:
        """Fold ``value`` in as job ``job_id``'s result only if it answers that job's spec; a result
        produced for another spec is refused (logged) and the job scored failed with the reason."""
        spec = self.pipeline.jobs[job_id].spec
        key = spec.key(self.settings)
        result = JobResult.from_dict(value, spec)
        problem = result.mismatch(spec, key)
        if problem:
            _logger.error("refused: %s; the job is scored as failed", problem)
            result = JobResult.failed(spec, f"refused a result produced for another spec: {problem}")
            result.key = key
        self.pipeline.tell(job_id, result)

    def _after_change(self, slot_freeing: bool = False, concurrency: int | None = None) -> None:
        """``slot_freeing``: a trial reported, so its slot frees in moments (send its next job ahead,
        unless ``concurrency`` jobs are in flight already)."""
        if self.pipeline.failure and not self._failure_logged:
            self._failure_logged = True
            _logger.error("SAFS stops: %s. No further trials; the experiment ends once running ones finish.",
                          self.pipeline.failure)
        self._pay_credits()
        if slot_freeing:
            self._send_ahead(concurrency or 1)
        self._save()
        self._settle_trial_count()
        if self.pipeline.finished or self.pipeline.failure:
            self.write_results()

    def _settle_trial_count(self) -> None:
        """Tell NNI the exact trial count once known; once nothing more will be issued, what it ran
        (the manager's count, read by the sender thread)."""
        total = self.pipeline.total_if_known()
        total = None if total is None else total + self.resubmitted
        ending = bool(self.pipeline.finished or self.pipeline.failure)
        if total is not None and (total, ending) != (self.reported_total, self._reported_ending):
            self.reported_total, self._reported_ending = total, ending
            self._sends.put(functools.partial(self._set_trial_count, total, ending))

    def _set_trial_count(self, total: int, ending: bool) -> None:
        """(The sender thread.) ``ending``: the trials NNI recorded, when it knows them."""
        self.manager.set_max_trial_number((self.manager.recorded_trial_count() if ending else None) or total)

    def _fail_stop(self, reason: str, transient: bool = False) -> None:
        """Stop the pipeline with ``reason``; the experiment ends once the trials NNI runs have ended.

        ``transient``: the cause was I/O, the manager or a lock, not the method: the stop is saved
        as such and ``nnictl resume`` goes on. Each step on its own: the results (with the reason)
        are written even when the state or the manager cannot be reached.
        """
        if self._stopping:
            return  # recording the stop raised in turn
        self._stopping = True
        try:
            if not self.pipeline.failure:
                self.pipeline.failure = reason + (" (a transient cause: nnictl resume continues the run)"
                                                  if transient else "")
                self.transient_failure = transient
            self.credits.clear()  # requests NNI will not see answered: it stops asking at maxTrialNumber
            _logger.error("SAFS stops: %s. No further trials; the experiment ends once running ones finish.",
                          self.pipeline.failure)
            self._failure_logged = True
            for step in (self.write_results, self._settle_trial_count, self._save):
                try:
                    step()
                except Exception:  # noqa: BLE001  (logged; the other steps still run)
                    _logger.exception("SafsTuner could not %s while stopping", step.__name__.strip("_"))
        finally:
            self._stopping = False

    def requeue(self, job_id: int, extra_trial: bool = True) -> None:
        """Hand an issued job out again (its trial was lost: e.g. cancelled before a resume).

        ``extra_trial``: the lost trial was already counted (NNI recorded it), so the re-run
        is one trial more than one per job; a job NNI never submitted is not.
        """
        p = self.pipeline
        if job_id in p.jobs and job_id not in p.results and job_id not in self.requeued:
            marker = self._marker(job_id)
            if marker.is_file() and json.loads(marker.read_text()).get("result") is None:
                marker.unlink()  # it names the lost trial: its end must not score the re-run
            self.requeued.append(job_id)
            if extra_trial:
                self.extra_trial_jobs.add(job_id)

    def _next_job(self):
        """A requeued job first (unless its result came in meanwhile), else the pipeline's next."""
        while self.requeued:
            job_id = self.requeued.pop(0)
            if job_id not in self.pipeline.results:
                self.resubmitted += job_id in self.extra_trial_jobs
                self.extra_trial_jobs.discard(job_id)
                return self.pipeline.jobs[job_id]
        return self.pipeline.ask()

    def _pay_credits(self) -> None:
        while self.credits and self.st_callback is not None and not self._manager_gone:
            job = self._next_job()
            if job is None:
                return
            self._hand_out(self.credits.pop(0), job)

    def _in_flight(self) -> int:
        """Jobs handed to NNI whose result has not come: running, or waiting for a slot."""
        return sum(1 for job_id in set(self.parameter_jobs.values()) if job_id not in self.pipeline.results)

    def _send_ahead(self, concurrency: int) -> None:
        """The job for the slot a reporting trial is about to free, unless one already waits at NNI
        (the reporting trial is no longer in flight: in flight are the others and any waiting)."""
        if self.st_callback is None or self._manager_gone or self._in_flight() >= concurrency:
            return
        job = self._next_job()
        if job is None:
            return
        self._hand_out(new_parameter_id(), job)  # an id from NNI's own counter, as its requests' ids

    def _hand_out(self, parameter_id: int, job: Job) -> None:
        """Issue ``job`` under ``parameter_id``; the sender thread sends it to NNI."""
        self.parameter_jobs[parameter_id] = job.id
        self._sends.put(functools.partial(self._send_trial, parameter_id, job.id, job.params))

    def _send_trial(self, parameter_id: int, job_id: int, params: dict) -> None:
        """(The sender thread.) Send one job through ``st_callback``.

        ``nnictl stop`` closes the manager while a result may still be folded in: NNI's channel
        then raises after its retries (a refused connection, a reset, a timeout, a closed
        websocket). That is not the method failing (fail-stop would end ``nnictl resume`` at
        once): nothing more is sent, the job stays issued, saved as such, and the resumed tuner
        hands it out again, as it does every job NNI never recorded.
        """
        if self._manager_gone:
            return
        try:
            self.st_callback(parameter_id, params)
        except (OSError, WebSocketException) as err:
            _logger.warning("the NNI manager is gone (%s: %s); job %s stays issued and is handed out again "
                            "on nnictl resume", type(err).__name__, err, job_id)
            self._manager_gone = True

    def _send_loop(self) -> None:
        """The tuner's one sender thread: every job and trial count the callbacks decided on, in
        order, sent without the tuner's lock (NNI's sends retry for seconds)."""
        while True:
            send = self._sends.get()
            try:
                if send is None:
                    return
                send()
            except Exception as err:  # noqa: BLE001  (a send that failed otherwise: fail-stop)
                if isinstance(err, TRANSIENT_ERRORS) and self._manager_gone:
                    continue
                with self._lock:
                    _logger.exception("SafsTuner could not send to NNI; SAFS stops")
                    self._fail_stop(f"sending to NNI raised {type(err).__name__}: {err}",
                                    transient=isinstance(err, TRANSIENT_ERRORS))
            finally:
                self._sends.task_done()

    def flush(self) -> None:
        """Wait until everything decided so far has been sent (tests; the end of the process)."""
        self._sends.join()

    def write_results(self) -> None:
        table = write_results(self.pipeline)
        _logger.info("SAFS results written to %s:\n%s", self.config.workspace, table)
