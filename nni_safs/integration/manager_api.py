"""Talk to the running NNI manager's REST API from inside the tuner.

NNI 3.0 never ends an experiment whose tuner has no more trials: it waits until
``maxTrialNumber`` trials were submitted. SAFS's stage 1 takes a data-dependent number of
evaluations, so once the tuner knows the exact total it sets ``maxTrialNumber`` to it
(the same request ``nnictl update trialnum`` makes), and the experiment ends DONE.

:class:`ManagerClient` is what the tuner is given (tests pass one pointing at a fake
manager); :meth:`ManagerClient.from_environment` finds the manager's port in
``NNI_TUNER_COMMAND_CHANNEL`` (``ws://localhost:PORT/...``), which NNI sets for the
dispatcher. Outside NNI (no URL) every method does nothing and reads return None. Inside NNI
a read that fails is retried, then raises :class:`ManagerUnreachable`: a guess (None) would
resolve paths against the wrong folder, leave dead trials unscored and requeue nothing.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from typing import Any

from nni_safs.borrowed import manager_address, recorded_parameters

_logger = logging.getLogger("nni_safs.integration.manager_api")
RETRY_DELAYS = (0.5, 1.0, 2.0)  # seconds before each retry of a failed REST call


class ExposedManagerError(RuntimeError):
    """The NNI manager listens beyond loopback though exposure was not asked for."""


class ManagerUnreachable(ConnectionError):
    """The NNI manager did not answer a REST call, after retries (it is stopping, or gone)."""


class ManagerClient:
    """The REST API of the NNI manager on ``port`` (under URL ``prefix``), through NNI's own
    client (``nni.experiment.rest``); ``port`` None: no manager."""

    def __init__(self, port: int | None, prefix: str | None = None) -> None:
        self.port = port
        self.prefix = prefix

    @classmethod
    def from_environment(cls) -> "ManagerClient":
        return cls(*manager_address(os.environ.get("NNI_TUNER_COMMAND_CHANNEL")))

    def _request(self, method: str, path: str, body: dict | None = None) -> Any:
        if self.port is None:
            return None
        from nni.experiment import rest  # the dispatcher's process has imported nni already
        return rest.request(method, self.port, path, body, self.prefix)

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        """A REST call (None outside NNI), retried; raises :class:`ManagerUnreachable`."""
        for delay in (*RETRY_DELAYS, None):
            try:
                return self._request(method, path, body)
            except Exception as err:  # noqa: BLE001  (NNI's client raises requests' and its own errors)
                if delay is None:
                    raise ManagerUnreachable(f"the NNI manager on port {self.port} did not answer {method} {path} "
                                             f"after {len(RETRY_DELAYS) + 1} tries: {type(err).__name__}: "
                                             f"{err}") from err
                _logger.warning("%s %s to the NNI manager failed (%s); retrying in %.1f s", method, path, err, delay)
                time.sleep(delay)
        return None  # not reached: the loop returns or raises

    def _get(self, path: str) -> Any:
        return self._call("GET", path)

    def experiment_id(self) -> str | None:
        """The id of the experiment this manager runs (None outside NNI)."""
        profile = self._get("/experiment")
        return None if profile is None else profile.get("id")

    def base_directory(self) -> str | None:
        """Where relative classArgs paths point under NNI: the tuner's ``codeDirectory``, else
        the ``trialCodeDirectory`` (both absolute, as nnictl resolved them)."""
        profile = self._get("/experiment")
        if profile is None:
            return None
        params = profile["params"]
        return (params.get("tuner") or {}).get("codeDirectory") or params.get("trialCodeDirectory")

    def trial_concurrency(self) -> int | None:
        """How many trials NNI runs at once (a user may change it while the experiment runs)."""
        profile = self._get("/experiment")
        return None if profile is None else profile["params"].get("trialConcurrency")

    def trial_statuses(self) -> dict[str, str] | None:
        """trialJobId -> status (SUCCEEDED, FAILED, USER_CANCELED, ...) of every trial; None outside NNI."""
        trials = self._get("/trial-jobs")
        return None if trials is None else {t["trialJobId"]: t["status"] for t in trials}

    def trial_jobs(self) -> dict[int, set[str]] | None:
        """SAFS job id -> statuses of the trials NNI recorded for it; None outside NNI.

        WAITING/RUNNING ones are re-submitted by ``nnictl resume`` itself; every recorded trial
        counts against ``maxTrialNumber``. (NNI may pair a trial with another trial's parameters,
        but the set of parameters it recorded is still the set it ran.)
        """
        trials = self._get("/trial-jobs")
        if trials is None:
            return None
        jobs: dict[int, set[str]] = {}
        for trial in trials:
            params = recorded_parameters(trial)
            if params is not None and "job" in params:
                jobs.setdefault(int(params["job"]), set()).add(trial["status"])
        return jobs

    def recorded_trial_count(self) -> int | None:
        """How many trials NNI has recorded (each counts against ``maxTrialNumber``)."""
        trials = self._get("/trial-jobs")
        return None if trials is None else len(trials)

    def set_max_trial_number(self, total: int) -> None:
        """Make the experiment end after exactly ``total`` trials."""
        profile = self._get("/experiment")
        if profile is None or profile["params"].get("maxTrialNumber") == total:
            return
        profile["params"]["maxTrialNumber"] = total
        self._call("PUT", "/experiment?update_type=MAX_TRIAL_NUM", profile)
        _logger.info("SAFS needs exactly %d trials: maxTrialNumber set to %d", total, total)

    def check_max_trial_number(self, low: int, high: int) -> None:
        """Log at start when maxTrialNumber cannot fit the pipeline."""
        profile = self._get("/experiment")
        if profile is None:
            return
        configured = profile["params"].get("maxTrialNumber")
        if configured is None or configured < high:
            _logger.warning("maxTrialNumber is %s but the SAFS pipeline may need up to %d trials "
                            "(%d or more evaluations); set maxTrialNumber: %d. The tuner lowers it to the exact count once stage 1 "
                            "(and with hpo_promotion, stage 2) ends.",
                            configured, high, low, high)
        else:
            _logger.info("maxTrialNumber %s; the tuner will lower it to the exact count (at most %d; "
                         "%d evaluations or more) once stage 1 (and with hpo_promotion, stage 2) ends", configured, high, low)

    def _manager_process(self):
        """The NNI manager's process (the node ``main.js`` that started this dispatcher), or None."""
        import psutil
        manager = psutil.Process().parent()  # NNI starts us through /bin/sh -c: find the node process
        while manager is not None and "main.js" not in " ".join(manager.cmdline()):
            manager = manager.parent()
        return manager

    def check_loopback(self, exposure_asked: bool) -> None:
        """Fail closed: stop the experiment when its manager listens beyond loopback unasked.

        The loopback guard (a Node preload, :mod:`nni_safs.integration.manager_host`) reaches the
        manager only through the environment that started it; a ``nnictl`` from elsewhere, a
        missing preload file or a ``listen()`` form it does not know would leave the REST API
        (no authentication) open on every interface. So the tuner looks at what the manager
        really listens on; if it cannot tell, it says so and goes on (a warning).

        Raises:
            ExposedManagerError: the manager listens on a non-loopback address and
                ``exposure_asked`` is False; the manager has been terminated.
        """
        if self.port is None:
            return
        import psutil
        manager = self._manager_process()
        try:
            hosts = {c.laddr.ip for c in manager.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == self.port} if manager else set()
        except (psutil.Error, OSError) as err:
            _logger.warning("could not read where the NNI manager listens (%s); not checked", err)
            return
        if not hosts:
            _logger.warning("could not find the NNI manager's listening socket on port %s; not checked", self.port)
            return
        exposed = sorted(host for host in hosts if not ipaddress.ip_address(host).is_loopback)
        if exposed and not exposure_asked:
            manager.terminate()
            raise ExposedManagerError(
                f"the NNI manager listens on {', '.join(exposed)} port {self.port} (every interface: its REST "
                "API has no authentication), but exposure was not asked for; SAFS stopped the experiment. "
                "Start it with `safs experiment CONFIG`, or with nnictl from the environment where nni-safs "
                "is installed (its loopback preload), or set NNI_SAFS_EXPOSE=1 to expose it on purpose")
        _logger.info("the NNI manager listens on %s port %s", ", ".join(sorted(hosts)), self.port)

    def exit_with_manager(self, poll_seconds: float = 2.0) -> None:
        """End this dispatcher process when the NNI manager that started it dies.

        After the manager is killed (``kill -9``) NNI 3.0 leaves its dispatcher running; it then
        reconnects to the manager that ``nnictl resume`` starts on the same port, beside the new
        dispatcher, and the experiment errors ("new epoch start"). The tuner saves its state after
        every change, so leaving at once loses nothing.
        """
        if self.port is None:
            return
        import psutil
        manager = self._manager_process()
        if manager is None:
            _logger.warning("could not find the NNI manager process; not watching it")
            return

        def watch() -> None:
            try:
                while manager.is_running() and manager.status() != psutil.STATUS_ZOMBIE:
                    time.sleep(poll_seconds)
            except psutil.NoSuchProcess:
                pass
            _logger.warning("the NNI manager is gone; the SAFS dispatcher exits (state saved; use nnictl resume)")
            logging.shutdown()
            os._exit(0)

        threading.Thread(target=watch, name="safs-manager-watch", daemon=True).start()
