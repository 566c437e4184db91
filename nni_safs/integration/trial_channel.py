"""How a trial receives its job from NNI and reports to it, at the lowest start-up cost.

``import nni`` is slow (``nni.mutable`` imports ``scipy.stats``, ``json_tricks`` imports
pandas), and a trial uses four functions of it. The
trials NNI 3.0's local training service starts get an HTTP command channel
(``NNI_TRIAL_COMMAND_CHANNEL=http://...``); :class:`HttpChannel` speaks that protocol with
the standard library, as ``nni/runtime/trial_command_channel/v3.py`` and
``nni/runtime/command_channel/http.py`` define it: commands are PUT as JSON, replies are
polled with GET (the manager holds a poll for a second; 408: poll again, 410: the channel
is closed), the parameter record and
metrics travel as JSON strings inside the command (``nni.dump`` of plain data is plain JSON).
Any other launch (the remote training service's file channel, a standalone run) goes
through NNI's own trial API (:class:`NniChannel`), so nothing depends on this shortcut. As
``import nni`` would, opening the HTTP channel sends the trial's output to ``trial.log``.
"""
from __future__ import annotations

import io
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Protocol

from nni_safs.borrowed import trial_parameter_id

CHANNEL_ENV = "NNI_TRIAL_COMMAND_CHANNEL"


class TrialChannel(Protocol):
    """What a trial needs of NNI: its parameters, intermediate and final results."""
    parameter_id: int | None

    def next_parameters(self) -> dict[str, Any] | None:
        """The job's parameters (once per trial); None when NNI sends none."""

    def report(self, value: Any, final: bool) -> None:
        """An intermediate (per-epoch) or the final result."""


class HttpChannel:
    """NNI 3.0's HTTP trial command channel, spoken with ``urllib`` (no ``import nni``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.parameter_id: int | None = None
        self.trial_job_id = os.environ.get("NNI_TRIAL_JOB_ID", "")
        self._sequence = 0

    def _send(self, command: dict[str, Any]) -> None:
        request = urllib.request.Request(self.url, data=json.dumps(command).encode(), method="PUT",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60):
                pass
        except urllib.error.HTTPError as err:
            if err.code != 410:  # 410: the manager is shutting down; as NNI's client, carry on
                raise OSError(f"NNI trial command channel {self.url}: unexpected HTTP {err.code}") from None

    def _receive(self) -> dict[str, Any] | None:
        while True:
            try:
                with urllib.request.urlopen(self.url, timeout=120) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as err:
                if err.code == 408:  # nothing yet: poll again
                    continue
                if err.code == 410:  # the channel is closed
                    return None
                raise OSError(f"NNI trial command channel {self.url}: unexpected HTTP {err.code}") from None

    def next_parameters(self) -> dict[str, Any] | None:
        self._send({"type": "request_parameter"})
        reply = self._receive()
        if reply is None:
            return None
        if reply.get("type") != "parameter":
            raise OSError(f"NNI trial command channel {self.url}: expected a parameter, got {reply!r}")
        record = json.loads(reply["parameter"])
        self.parameter_id = record.get("parameter_id")
        return record.get("parameters")

    def report(self, value: Any, final: bool) -> None:
        metric = {"parameter_id": self.parameter_id, "trial_job_id": self.trial_job_id,
                  "type": "FINAL" if final else "PERIODICAL", "sequence": 0 if final else self._sequence,
                  "value": json.dumps(value)}
        if not final:
            self._sequence += 1
        self._send({"type": "metric", "metric": json.dumps(metric)})


class NniChannel:
    """NNI's own trial API: every launch the HTTP shortcut does not cover."""

    def __init__(self) -> None:
        import nni  # deferred: see the module docstring
        self._nni = nni
        self.parameter_id: int | None = None

    def next_parameters(self) -> dict[str, Any] | None:
        params = self._nni.get_next_parameter()
        self.parameter_id = trial_parameter_id(self._nni.trial)
        return params

    def report(self, value: Any, final: bool) -> None:
        if final:
            self._nni.report_final_result(value)
        else:
            self._nni.report_intermediate_result(value)


class _TrialLog(io.TextIOBase):
    """What ``import nni`` does for a local trial: its prints and log records go, timestamped,
    to ``$NNI_OUTPUT_DIR/trial.log`` (the portal's "View trial log"; ``trial.stdout`` stays empty)."""

    def __init__(self, file: io.TextIOBase) -> None:
        self.file = file
        self.pending = ""  # the start of a line not ended yet

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.file.write("".join(f"[{stamp}] PRINT {line}\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.write("\n")
        self.file.flush()


def _log_to_trial_log(output_dir: str) -> None:
    os.makedirs(output_dir, exist_ok=True)
    log_file = open(os.path.join(output_dir, "trial.log"), "a", buffering=1)
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)s (%(name)s) %(message)s", "%Y-%m-%d %H:%M:%S"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    sys.stdout = _TrialLog(log_file)


def launched_locally() -> bool:
    """Whether NNI's local training service launched this trial (its HTTP trial channel)."""
    return os.environ.get(CHANNEL_ENV, "").startswith("http://")


def open_channel() -> TrialChannel:
    """The channel this trial was launched with (see the module docstring)."""
    if not launched_locally():
        return NniChannel()
    url = os.environ[CHANNEL_ENV]
    if os.environ.get("NNI_OUTPUT_DIR"):
        _log_to_trial_log(os.environ["NNI_OUTPUT_DIR"])
    return HttpChannel(url)
