"""The trial side of NNI 3.0's HTTP command channel, against a server that behaves like NNI's
(``nni_node/common/command_channel/http.js``: GET holds, then 408 when nothing is queued; 410
once the manager stops serving). The nnictl tests run the same code against the real manager."""
import json

import pytest
from conftest import JsonHandler, serving

from nni_safs.integration.trial_channel import HttpChannel, NniChannel, open_channel


class FakeManager(JsonHandler):
    outgoing: list  # replies to hand out, None = 408 (poll timed out), "gone" = 410
    received: list  # PUT commands

    def do_GET(self):
        reply = self.outgoing.pop(0) if self.outgoing else "gone"
        if reply is None or reply == "gone":
            self.reply(status=408 if reply is None else 410)
        else:
            self.reply(reply)

    def do_PUT(self):
        self.received.append(self.body())
        self.reply()


@pytest.fixture
def manager():
    FakeManager.outgoing, FakeManager.received = [], []
    with serving(FakeManager) as url:
        yield FakeManager, f"{url}/env/abc/trial"


def test_a_trial_gets_its_parameters_after_polling_and_reports_as_nni_does(manager, monkeypatch):
    fake, url = manager
    monkeypatch.setenv("NNI_TRIAL_JOB_ID", "Ab1Cd")
    record = {"parameter_id": 7, "parameter_source": "algorithm", "parameters": {"job": 3, "lr": 0.01},
              "parameter_index": 0}
    fake.outgoing = [None, None, {"type": "parameter", "parameter": json.dumps(record)}]
    channel = HttpChannel(url)
    assert channel.next_parameters() == {"job": 3, "lr": 0.01}
    assert channel.parameter_id == 7 and fake.outgoing == []  # it polled through both timeouts
    channel.report(51.5, final=False)
    channel.report(52.0, final=False)
    channel.report({"default": 52.0, "job": 3}, final=True)
    assert fake.received[0] == {"type": "request_parameter"}
    metrics = [json.loads(c["metric"]) for c in fake.received[1:]]
    assert all(c["type"] == "metric" for c in fake.received[1:])
    assert [(m["type"], m["sequence"], json.loads(m["value"])) for m in metrics] == [
        ("PERIODICAL", 0, 51.5), ("PERIODICAL", 1, 52.0), ("FINAL", 0, {"default": 52.0, "job": 3})]
    assert {(m["parameter_id"], m["trial_job_id"]) for m in metrics} == {(7, "Ab1Cd")}


def test_a_closed_channel_gives_no_parameters(manager):
    fake, url = manager
    fake.outgoing = ["gone"]
    assert HttpChannel(url).next_parameters() is None


def test_launches_without_an_http_channel_use_nnis_own_trial_api(monkeypatch):
    monkeypatch.delenv("NNI_TRIAL_COMMAND_CHANNEL", raising=False)
    assert isinstance(open_channel(), NniChannel)  # e.g. the remote training service's file channel
    monkeypatch.setenv("NNI_TRIAL_COMMAND_CHANNEL", "http://127.0.0.1:1/env/x/trial")
    assert isinstance(open_channel(), HttpChannel)


def test_a_local_trial_logs_to_trial_log_as_import_nni_would(tmp_path, monkeypatch):
    import logging
    import sys
    monkeypatch.setenv("NNI_TRIAL_COMMAND_CHANNEL", "http://127.0.0.1:1/env/x/trial")
    monkeypatch.setenv("NNI_OUTPUT_DIR", str(tmp_path / "out"))
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # restored after the test
    try:
        open_channel()
        print("epoch 1: val top-1 50.00%")
        print("two", "parts", end="")
        print(" joined")
        logging.getLogger("nni_safs.x").warning("careful")
        sys.stdout.flush()
    finally:
        for handler in root.handlers[len(handlers):]:
            root.removeHandler(handler)
        root.setLevel(level)
    lines = (tmp_path / "out" / "trial.log").read_text().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "PRINT epoch 1: val top-1 50.00%", "PRINT two parts joined", "WARNING (nni_safs.x) careful"]
